"""The seed's ``normalize_dataset``: resample, map labels, crop/pad and write every LUNA16 case.

``python -m pipeline preprocess ROOT VOX_SPACING Z_MAX Y_MAX X_MAX [--workers N]`` reads
``ROOT/lung_ct_image`` + ``ROOT/seg-lungs-LUNA16`` (or the official ``subset*`` layout) and writes
``ROOT/normalized_lung_ct/<uid>.mhd`` (int16 HU, not clipped, like the seed) and
``ROOT/normalized_lung_mask/<uid>.mhd`` (uint8 0/1, compressed) on a ``VOX_SPACING`` mm grid of
(X, Y, Z) = (X_MAX, Y_MAX, Z_MAX) voxels, with the same transforms the bundle uses
(:func:`pipeline.presets.deterministic_transforms`). Differences from the seed, on purpose: linear
interpolation for CT and nearest for masks (the seed spline-interpolates masks), the direction
matrix is honoured (volumes are reoriented to RAS), and the written origin is the true origin of
the cropped/padded grid (the seed keeps the original origin).

Cases run in parallel, already finished cases are skipped, each file is written atomically, and a
failing case is reported with its uid and reason without stopping the others.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from monai.transforms import Compose

from pipeline import luna16
from pipeline.excepthook import cause_message
from pipeline.presets import deterministic_transforms
from transforms import read_image, write_image
from transforms.errors import InputError

__all__ = ["CaseResult", "OUTPUT_IMAGE_DIR", "OUTPUT_MASK_DIR", "check_pair", "default_workers", "preprocess_case",
           "preprocess_dataset"]

logger = logging.getLogger(__name__)

OUTPUT_IMAGE_DIR = "normalized_lung_ct"
OUTPUT_MASK_DIR = "normalized_lung_mask"
#: relative tolerance when comparing an image's and its mask's spacing / origin / direction
GEOMETRY_RTOL = 1e-4
#: voxel sizes outside (0, MAX_SPACING_MM] are not a CT's (a header error)
MAX_SPACING_MM = 20.0
#: an image whose values are all >= this is almost certainly not in Hounsfield units
NON_HU_MIN = 0


def default_workers() -> int:
    """``--workers`` default: one process per core, at most the seed's 8."""
    return min(8, os.cpu_count() or 1)


@dataclass
class CaseResult:
    """Outcome of one case: ``status`` is ``"done"``, ``"skipped"`` or ``"failed"``."""

    uid: str
    status: str
    message: str = ""
    warnings: tuple[str, ...] = ()


def _header(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(f"'{path}': cannot read the image header ({_first_line(e)})") from e
    return reader


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # SimpleITK puts the useful sentence last
    return lines[-1] if lines else type(e).__name__


def check_pair(image_path: str, label_path: str) -> None:
    """Check before any compute that image and mask are 3-D and share size and geometry.

    Raises:
        InputError: naming the file and what differs.
    """
    img, lab = _header(image_path), _header(label_path)
    if img.GetDimension() != 3:
        raise InputError(f"'{image_path}': expected a 3-D CT, got a {img.GetDimension()}-D image")
    if lab.GetDimension() != 3:
        raise InputError(f"'{label_path}': expected a 3-D mask, got a {lab.GetDimension()}-D image")
    spacing = img.GetSpacing()
    if not all(0 < s <= MAX_SPACING_MM for s in spacing):
        raise InputError(f"'{image_path}': voxel spacing {tuple(round(s, 4) for s in spacing)} mm is not a CT's "
                         f"(expected each in (0, {MAX_SPACING_MM:g}] mm): check the header's ElementSpacing")
    if tuple(img.GetSize()) != tuple(lab.GetSize()):
        raise InputError(f"'{label_path}': mask size {lab.GetSize()} differs from its image's {img.GetSize()} ('{image_path}')")
    for name, a, b in (
        ("spacing", img.GetSpacing(), lab.GetSpacing()),
        ("origin", img.GetOrigin(), lab.GetOrigin()),
        ("direction", img.GetDirection(), lab.GetDirection()),
    ):
        if not np.allclose(a, b, rtol=GEOMETRY_RTOL, atol=1e-3):
            raise InputError(f"'{label_path}': mask {name} {tuple(round(v, 4) for v in b)} differs from its image's "
                             f"{tuple(round(v, 4) for v in a)} ('{image_path}')")


def preprocess_case(
    uid: str,
    image_path: str,
    label_path: str,
    out_root: str,
    spacing: float,
    spatial_size: Sequence[int],
    overwrite: bool = False,
) -> CaseResult:
    """Preprocess one case and write its two files; never raises for bad input (returns ``failed``)."""
    out_img = Path(out_root) / OUTPUT_IMAGE_DIR / f"{uid}.mhd"
    out_lab = Path(out_root) / OUTPUT_MASK_DIR / f"{uid}.mhd"
    if not overwrite and out_img.is_file() and out_lab.is_file():
        return CaseResult(uid, "skipped")
    notes: list[str] = []
    try:
        check_pair(image_path, label_path)
        size = _header(image_path).GetSize()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # read_image raises one-line InputErrors (LoadImaged would wrap them in a multi-line RuntimeError)
            xf = Compose(deterministic_transforms("image", "label", spacing=spacing, spatial_size=spatial_size, load=False))
            data = xf({"image": read_image(image_path), "label": read_image(label_path)})
        image, label = data["image"], data["label"]
        if float(image.min()) >= NON_HU_MIN:
            notes.append(f"'{image_path}': no negative voxel (min {float(image.min()):.0f}): this does not look like a CT in"
                         " Hounsfield units (air is -1000 HU); convert with the scanner's rescale slope/intercept first")
        resampled = [round(n * s / spacing) for n, s in zip(size, _header(image_path).GetSpacing())]
        if any(r < t for r, t in zip(resampled, spatial_size)):
            notes.append(f"'{image_path}': resampled size {tuple(resampled)} is smaller than the crop "
                         f"{tuple(spatial_size)} (x, y, z): padded with the volume minimum")
        if not bool((label > 0).any()):
            notes.append(f"'{label_path}': the mask has no lung voxel")
        write_image(image, out_img)
        write_image(label, out_lab)
    except InputError as e:
        return CaseResult(uid, "failed", str(e), tuple(notes))
    except Exception as e:  # noqa: BLE001 - one broken case must not stop the others; report it
        # MONAI's Compose wraps our InputErrors in RuntimeError("applying transform ..."): report the cause
        message = cause_message(e)
        return CaseResult(uid, "failed", message, tuple(notes))
    return CaseResult(uid, "done", "", tuple(notes))


def preprocess_dataset(
    root: str | os.PathLike,
    spacing: float,
    spatial_size: Sequence[int],
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[CaseResult]:
    """Preprocess every case under ``root`` (the seed's ``normalize_dataset``).

    Args:
        root: LUNA16 root (seed or official layout).
        spacing: target isotropic voxel size in mm (the seed's ``vox_spacing``).
        spatial_size: (X, Y, Z) output size in voxels; the seed's ``Z_MAX Y_MAX X_MAX`` reversed.
        workers: processes (default: ``min(8, cpu count)``, the seed's 8 at most).
        overwrite: redo cases whose outputs exist.
        progress: show a progress bar.

    Returns:
        One :class:`CaseResult` per case (and per unpaired image).

    Raises:
        InputError: the root or its layout is unusable, or an argument is out of range.
    """
    if spacing <= 0 or not np.isfinite(spacing):
        raise InputError(f"VOX_SPACING must be a positive number of mm, got {spacing}")
    if len(spatial_size) != 3 or any(int(s) < 1 for s in spatial_size):
        raise InputError(f"Z_MAX Y_MAX X_MAX must be positive voxel counts, got {tuple(spatial_size)[::-1]}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cases = luna16.find_cases(root, allow_unpaired=True)
    results: list[CaseResult] = []
    for w in caught:
        text = str(w.message)
        if "unpaired" in text and " 0 of " not in text.split(";")[0]:
            results.append(CaseResult("(unpaired)", "failed", text))  # CTs without a mask cannot be preprocessed
        elif "unpaired" in text:
            logger.warning(text)
    workers = workers or default_workers()
    t0 = time.perf_counter()
    args = [(c.uid, str(c.image), str(c.label), str(root), float(spacing), tuple(int(s) for s in spatial_size), overwrite)
            for c in cases]
    bar = _progress(len(args), progress)
    if workers <= 1 or len(args) <= 1:
        for a in args:
            results.append(preprocess_case(*a))
            bar.update(1)
    else:
        # spawn, not fork: forking a process whose OpenMP/BLAS threads are running can deadlock the children
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(preprocess_case, *a) for a in args]
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update(1)
    bar.close()
    for r in results:
        for note in r.warnings:
            logger.warning(note)
        if r.status == "failed":
            logger.error(f"case {r.uid} failed: {r.message}")
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    logger.info(f"preprocess: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed "
                f"in {time.perf_counter() - t0:.1f} s ({workers} workers) -> {Path(root) / OUTPUT_IMAGE_DIR}")
    return results


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="preprocess", unit="case")
