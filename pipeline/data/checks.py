"""What is checked of a CT (and of its mask) before any compute, with one-line errors that say how to fix it.

Used by the segment tool (:func:`read_ct`, :func:`check_image`) and by the preprocess command
(:func:`check_pair`, :func:`header`): one definition of what a usable CT is.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from transforms import SimpleITKReader
from transforms.errors import InputError

__all__ = ["GEOMETRY_RTOL", "MAX_SPACING_MM", "check_image", "check_pair", "header", "hounsfield_problem", "read_ct",
           "spacing_missing"]

#: voxel sizes outside (0, MAX_SPACING_MM] mm are not a CT's (thicker "slices" mean a broken header)
MAX_SPACING_MM = 20.0
ORTHOGONAL_ATOL = 1e-3  # |D^T D - I| tolerance of the direction matrix (headers store ~6 digits)
#: relative tolerance when comparing an image's and its mask's spacing / origin / direction
GEOMETRY_RTOL = 1e-4
#: a chest CT in HU has air or lung (-1100..-500 HU) and soft tissue (-200..300 HU), each in at least this share of
#: its voxels; an MR, an unscaled or a windowed image has next to none of one of them
AIR_HU, TISSUE_HU = (-1100.0, -500.0), (-200.0, 300.0)
MIN_AIR_SHARE, MIN_TISSUE_SHARE = 0.005, 0.02
_SAMPLE_VOXELS = 1_000_000  # voxels looked at for the intensity distribution (a regular subsample)


def _last_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__  # SimpleITK puts the useful sentence last


def spacing_missing(path: str | os.PathLike) -> bool:
    """True when a text header (.mhd / .nrrd) gives no spacing (ITK then silently assumes 1 mm)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".mhd"):
        header = path.read_text(errors="replace")
        return not re.search(r"^\s*(ElementSpacing|ElementSize)\s*=", header, flags=re.MULTILINE)
    if name.endswith(".nrrd"):
        with path.open("rb") as f:
            header = f.read(1 << 14).split(b"\n\n")[0].decode("latin-1")
        return not re.search(r"^(spacings|space directions)\s*:", header, flags=re.MULTILINE)
    return False


def read_ct(path: str | os.PathLike, hounsfield: bool = True) -> sitk.Image:
    """Read a CT file or DICOM series folder and :func:`check_image` it, before any compute.

    Raises:
        InputError: unreadable, or a check fails (one line naming the file, what is wrong and how to fix it).
    """
    path = Path(path)
    if path.is_file() and spacing_missing(path):
        raise InputError(f"'{path}': the header gives no voxel spacing (ITK would assume 1 mm): add it")
    image = SimpleITKReader().read(str(path))
    check_image(image, str(path), hounsfield=hounsfield)
    return image


def hounsfield_problem(image: sitk.Image) -> str | None:
    """Why the intensities of ``image`` do not look like a CT in Hounsfield units, or ``None`` when they do.

    Judged by the distribution, not by one value: a chest CT has air or lung (-1100..-500 HU) in at least
    0.5 % of its voxels and soft tissue (-200..300 HU) in at least 2 %. An MR (arbitrary positive units, or
    shifted / z-scored ones that go negative), an image stored without its rescale (air near 0 or +24) or a
    display-windowed one (0..255) lacks one of them.
    """
    values = sitk.GetArrayViewFromImage(image).ravel()
    step = max(1, values.size // _SAMPLE_VOXELS)
    sample = np.asarray(values[::step], dtype=np.float32)
    air = float(np.mean((sample >= AIR_HU[0]) & (sample <= AIR_HU[1])))
    tissue = float(np.mean((sample >= TISSUE_HU[0]) & (sample <= TISSUE_HU[1])))
    if air >= MIN_AIR_SHARE and tissue >= MIN_TISSUE_SHARE:
        return None
    p1, p50, p99 = np.percentile(sample, [1, 50, 99])
    what = (f"{100 * air:.2g} % of voxels at air or lung values ({AIR_HU[0]:g}..{AIR_HU[1]:g} HU) and "
            f"{100 * tissue:.2g} % at soft tissue ({TISSUE_HU[0]:g}..{TISSUE_HU[1]:g} HU); percentiles 1/50/99: "
            f"{p1:.0f}/{p50:.0f}/{p99:.0f}")
    return (f"the intensities do not look like a CT in Hounsfield units ({what}): an MR, or a CT stored without its"
            " rescale (HU = value x RescaleSlope + RescaleIntercept) or display-windowed")


def check_image(image: sitk.Image, name: str, hounsfield: bool = True) -> None:
    """Refuse what is not a CT volume in HU on a sane grid.

    Checks: 3-D with at least 2 voxels per axis, one component per voxel, spacing in (0, 20] mm, orthogonal
    direction matrix, finite values; with ``hounsfield``, at least one negative value (HU: air is -1000) and an
    intensity distribution of a CT (:func:`hounsfield_problem`).

    Raises:
        InputError: the first failed check, in one line naming ``name``.
    """
    size = image.GetSize()
    if image.GetDimension() != 3 or min(size) < 2:
        one_slice = image.GetDimension() in (2, 3) and sorted(size)[-2] >= 2 and max(size[2:], default=1) <= 1
        if one_slice:
            problem = hounsfield_problem(image) if hounsfield and image.GetNumberOfComponentsPerPixel() == 1 else None
            raise InputError(f"'{name}': expected a 3-D CT volume, got a single slice (a 2-D image of size {size}):"
                             " segment the whole series (the folder of all its slices)"
                             + (f"; besides, {problem}" if problem else ""))
        raise InputError(f"'{name}': expected a 3-D CT volume, got a {image.GetDimension()}-D image of size {size}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"'{name}': expected one value per voxel (a grey-scale CT), got "
                         f"{image.GetNumberOfComponentsPerPixel()} components (colour or vector image)")
    spacing = image.GetSpacing()
    if not all(math.isfinite(s) and 0 < s <= MAX_SPACING_MM for s in spacing):
        raise InputError(f"'{name}': voxel spacing {tuple(round(s, 4) for s in spacing)} mm is not plausible for a"
                         f" CT (expected each in (0, {MAX_SPACING_MM:g}] mm): fix the spacing in the header")
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=ORTHOGONAL_ATOL):
        raise InputError(f"'{name}': direction matrix {np.round(direction, 4).tolist()} is not orthogonal (sheared"
                         " or scaled axes): fix the header or resample the image to an orthogonal grid")
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    if not (math.isfinite(stats.GetMinimum()) and math.isfinite(stats.GetMaximum())) or _has_nan(image):
        raise InputError(f"'{name}': the image holds NaN or infinite values; fix or exclude this volume")
    if not hounsfield:
        return
    if stats.GetMinimum() >= 0:
        raise InputError(f"'{name}': no negative voxel (min {stats.GetMinimum():g}, max {stats.GetMaximum():g}): not in"
                         " Hounsfield units (air is -1000 HU); convert first: HU = value x RescaleSlope +"
                         " RescaleIntercept (DICOM tags 0028,1053 and 0028,1052; the intercept is often -1024)")
    problem = hounsfield_problem(image)
    if problem:
        raise InputError(f"'{name}': {problem}; if it is a CT in HU, pass --force")


def _has_nan(image: sitk.Image) -> bool:
    """NaN voxels (min/max filters skip them) in a floating-point image."""
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return False
    return bool(np.isnan(sitk.GetArrayViewFromImage(image)).any())


def header(path: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(f"'{path}': cannot read the image header ({_last_line(e)})") from e
    return reader


def check_pair(image_path: str, label_path: str) -> None:
    """Check before any compute that image and mask are 3-D and share size and geometry.

    Raises:
        InputError: naming the file and what differs.
    """
    img, lab = header(image_path), header(label_path)
    if img.GetDimension() != 3:
        raise InputError(f"'{image_path}': expected a 3-D CT, got a {img.GetDimension()}-D image")
    if lab.GetDimension() != 3:
        raise InputError(f"'{label_path}': expected a 3-D mask, got a {lab.GetDimension()}-D image")
    spacing = img.GetSpacing()
    if not all(0 < s <= MAX_SPACING_MM for s in spacing):
        raise InputError(f"'{image_path}': voxel spacing {tuple(round(s, 4) for s in spacing)} mm is not a CT's "
                         f"(expected each in (0, {MAX_SPACING_MM:g}] mm): check the header's ElementSpacing")
    if tuple(img.GetSize()) != tuple(lab.GetSize()):
        raise InputError(f"'{label_path}': mask size {lab.GetSize()} differs from its image's {img.GetSize()} "
                         f"('{image_path}')")
    for name, a, b in (
        ("spacing", img.GetSpacing(), lab.GetSpacing()),
        ("origin", img.GetOrigin(), lab.GetOrigin()),
        ("direction", img.GetDirection(), lab.GetDirection()),
    ):
        if not np.allclose(a, b, rtol=GEOMETRY_RTOL, atol=1e-3):
            raise InputError(f"'{label_path}': mask {name} {tuple(round(v, 4) for v in b)} differs from its image's "
                             f"{tuple(round(v, 4) for v in a)} ('{image_path}')")
