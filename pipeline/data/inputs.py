"""Find the CT inputs a user points at: image files, DICOM series folders, or folders of either.

Used by the bundle's ``inference.json`` and by ``python -m pipeline segment``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import SimpleITK as sitk

from pipeline.data.luna16 import MASK_DIR, NORMALIZED_MASK_DIR
from transforms.errors import InputError
from transforms.io import SUPPORTED_SUFFIXES

__all__ = ["IMAGE_SUFFIXES", "find_ct_inputs", "inference_datalist", "is_dicom_series"]

#: single-file formats read by :class:`transforms.SimpleITKReader`
IMAGE_SUFFIXES = SUPPORTED_SUFFIXES
#: a DICOM file named on its own is read alone (a folder's .dcm files are read as the series they form)
DICOM_FILE_SUFFIX = ".dcm"
#: folders of masks in a LUNA16 root, skipped when a whole dataset folder is given
MASK_FOLDERS = {MASK_DIR, NORMALIZED_MASK_DIR}


def _is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def is_dicom_series(folder: Path) -> bool:
    """True when ``folder`` directly holds at least one DICOM series (read through GDCM).

    GDCM's "No Series were found" warning, which it prints for every folder that holds none, is not shown.
    """
    if not folder.is_dir():
        return False
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    except RuntimeError:
        return False
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def find_ct_inputs(paths: str | os.PathLike | Sequence[str | os.PathLike], recursive: bool = True) -> list[str]:
    """Expand the user's inputs into a sorted list of CT files and DICOM series folders.

    Args:
        paths: files (.mhd, .mha, .nrrd, .nii, .nii.gz, or one .dcm file), DICOM series folders, or folders of
            such inputs (searched recursively when ``recursive``).

    Raises:
        InputError: a path does not exist, or nothing usable was found (naming what was looked for).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[str] = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputError(f"input '{p}' does not exist")
        if p.is_file():
            if not _is_image_file(p) and not p.name.lower().endswith(DICOM_FILE_SUFFIX):
                raise InputError(f"input '{p}' is not a supported image file (expected {', '.join(IMAGE_SUFFIXES)} "
                                 "or a DICOM folder)")
            found.append(str(p))
        else:  # a DICOM series folder is an input; image files and series beside its slices are too
            if is_dicom_series(p):
                found.append(str(p))
            found.extend(_scan(p, recursive))
    if not found:
        raise InputError(f"no CT found in {', '.join(map(str, paths))}: expected {', '.join(IMAGE_SUFFIXES)} files or "
                         "DICOM series folders")
    return sorted(dict.fromkeys(found))


def _scan(folder: Path, recursive: bool) -> Iterable[str]:
    out = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name in MASK_FOLDERS:
            continue
        if _is_image_file(entry):
            out.append(str(entry))
        elif entry.is_dir():
            if is_dicom_series(entry):
                out.append(str(entry))
            if recursive:
                out.extend(_scan(entry, recursive))
    return out


def inference_datalist(paths: str | os.PathLike | Sequence[str | os.PathLike], image_key: str = "image") -> list[dict]:
    """``[{image_key: path}]`` for every input found by :func:`find_ct_inputs`."""
    return [{image_key: p} for p in find_ct_inputs(paths)]
