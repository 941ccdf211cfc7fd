"""How the segmentation outputs are named: after the input, in the input's format, in the output folder.

One definition for the segment tool (mask, QC picture, ``lung_stats.csv``) and for the bundle's
``inference.json`` (``SaveImaged`` with :class:`LikeInputLayout`); the mask's postfix is the config's
``output_postfix`` (``_lung``).
"""

from __future__ import annotations

import os
from pathlib import Path

from transforms.io import SUPPORTED_SUFFIXES

__all__ = ["LABEL_CHOICES", "QC_POSTFIX", "REPORT_HTML", "STATS_CSV", "LikeInputLayout", "output_path_like_input",
           "output_paths", "source_name_formatter"]

#: the mask's labels: ``left-right`` 1 = right lung, 2 = left lung (lungmask's convention); ``binary`` 1 = lung
LABEL_CHOICES = ("left-right", "binary")
QC_POSTFIX = "_qc.png"
STATS_CSV = "lung_stats.csv"
REPORT_HTML = "report.html"  # the run's page (pipeline.inference.run_report)
DEFAULT_EXT = ".nii.gz"  # for inputs that are not one file of a supported format (DICOM series folders)


def _split_name(source: str) -> tuple[str, str]:
    """(stem, extension) of an input's name; the extension is "" for a DICOM folder or an unknown format."""
    name = os.path.basename(os.path.normpath(str(source)))
    low = name.lower()
    ext = next((name[len(name) - len(s):] for s in SUPPORTED_SUFFIXES if low.endswith(s)), "")
    if not ext and low.endswith(".dcm"):  # one DICOM file: its mask is written as NIfTI
        return name[:-4], ""
    return (name[: len(name) - len(ext)] if ext else name), ext


def output_path_like_input(source: str, output_dir: str, postfix: str, default_ext: str = DEFAULT_EXT) -> str:
    """``output_dir/<input name><postfix><input's extension>``; a DICOM series folder (or any other input) gives NIfTI.

    Examples:
        ``/data/ct/case1.mhd`` -> ``out/case1_lung.mhd``; ``/dicom/series42/`` -> ``out/series42_lung.nii.gz``.
    """
    stem, ext = _split_name(str(source))
    return os.path.join(str(output_dir), f"{stem}{postfix}{ext or default_ext}")


class LikeInputLayout:
    """A MONAI ``FolderLayoutBase`` for ``SaveImage(d)``: name outputs after the input, in its format.

    Use with ``output_ext=""`` and ``output_name_formatter=pipeline.inference.outputs.source_name_formatter``.
    MONAI's own ``FolderLayout`` appends one fixed extension to every output; a researcher's folder
    mixes .mhd, .nii.gz and DICOM, and each mask should keep its input's format.
    """

    def __init__(self, output_dir: str, postfix: str, default_ext: str = DEFAULT_EXT) -> None:
        self.output_dir = output_dir
        self.postfix = postfix
        self.default_ext = default_ext

    def filename(self, source: str = "", **kwargs) -> str:
        os.makedirs(self.output_dir, exist_ok=True)
        return output_path_like_input(source, self.output_dir, self.postfix, self.default_ext)


def source_name_formatter(metadict: dict, saver: object) -> dict:
    """``output_name_formatter`` passing the input path (``filename_or_obj``) to :class:`LikeInputLayout`."""
    return {"source": str(metadict.get("filename_or_obj", "output"))}


def output_paths(source: str | os.PathLike, out_dir: str | os.PathLike, postfix: str) -> tuple[str, Path]:
    """(mask path like the input with ``postfix``, QC picture ``<name>_qc.png``) in ``out_dir``; DICOM gives NIfTI."""
    stem, _ = _split_name(str(source))
    return output_path_like_input(str(source), str(out_dir), postfix), Path(out_dir) / f"{stem}{QC_POSTFIX}"
