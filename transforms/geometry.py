"""Geometry between SimpleITK and MONAI, and the patient's sides: one copy of each conversion.

SimpleITK (and the files it reads) describe a grid by its LPS origin, spacing and direction matrix; MONAI by a
(d+1, d+1) affine, voxel index (x, y, z) -> world mm, in RAS. LPS and RAS differ by the sign of the first two world
axes. In a RAS affine world x grows towards the **patient's right**, so of two structures the one with the larger RAS
x lies further to the patient's right, whatever the file's direction matrix (flipped or permuted headers included).

Used by the reader and writer (:mod:`transforms.io`), the LUNA16 left/right label mapping
(:mod:`transforms.functional`) and the segmentation tool (``pipeline.inference``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.utils import orientation_ras_lps, to_affine_nd
from monai.utils import MetaKeys, SpaceKeys, convert_data_type

from .errors import InputError

__all__ = ["MM3_PER_ML", "RAS_X", "affine_of", "centroid", "lps_geometry", "sitk_affine", "voxel_volume_ml", "world_x"]

#: row of a RAS affine holding world x (+x = the patient's right)
RAS_X = 0
MM3_PER_ML = 1000.0


def sitk_affine(image: sitk.Image, lps_to_ras: bool = True) -> np.ndarray:
    """The (d+1, d+1) affine of a SimpleITK image, voxel index (x, y, z) -> world mm, as MONAI's ITKReader builds it.

    Args:
        image: any SimpleITK image.
        lps_to_ras: return the RAS affine (MONAI's convention); ``False`` keeps ITK's LPS.
    """
    d = image.GetDimension()
    affine = np.eye(d + 1)
    affine[:d, :d] = np.asarray(image.GetDirection(), dtype=np.float64).reshape(d, d) @ np.diag(image.GetSpacing())
    affine[:d, d] = image.GetOrigin()
    return orientation_ras_lps(affine) if lps_to_ras else affine


def lps_geometry(affine: NdarrayOrTensor, d: int | None = None, lps_to_ras: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SimpleITK's (origin, spacing, direction) of an affine, the inverse of :func:`sitk_affine`.

    Args:
        affine: (d+1, d+1) affine (any container); a larger one is cut to ``d`` spatial dimensions.
        d: spatial dimensions (default: the affine's).
        lps_to_ras: the affine is RAS (``True``) or already LPS.

    Returns:
        float64 arrays: origin (d,), spacing (d,), direction (d, d) with unit columns.

    Raises:
        InputError: the affine has an axis of zero length.
    """
    matrix = np.asarray(convert_data_type(affine, np.ndarray, dtype=np.float64)[0], dtype=np.float64)
    d = matrix.shape[0] - 1 if d is None else d
    lps = np.asarray(to_affine_nd(d, matrix), dtype=np.float64)
    if lps_to_ras:
        lps = orientation_ras_lps(lps)
    spacing = np.linalg.norm(lps[:d, :d], axis=0)
    if not np.all(spacing > 0):
        raise InputError(f"affine {lps.tolist()} has an axis of zero length: not an image grid")
    return lps[:d, d], spacing, lps[:d, :d] / spacing


def affine_of(img: NdarrayOrTensor, affine: NdarrayOrTensor | None = None, spatial_ndim: int = 3) -> np.ndarray | None:
    """The RAS affine of ``img``: ``affine`` if given (taken as RAS), else a MetaTensor's own (LPS meta converted).

    Returns:
        A (spatial_ndim+1, spatial_ndim+1) float64 array, or ``None`` for a plain array without ``affine``.
    """
    lps = False
    if affine is None:
        if not isinstance(img, MetaTensor):
            return None
        affine, lps = img.affine, img.meta.get(MetaKeys.SPACE, SpaceKeys.RAS) == SpaceKeys.LPS
    matrix = np.asarray(convert_data_type(affine, np.ndarray, dtype=np.float64)[0], dtype=np.float64)
    matrix = np.asarray(to_affine_nd(spatial_ndim, matrix), dtype=np.float64)
    return orientation_ras_lps(matrix) if lps else matrix


def world_x(affine: np.ndarray, index: Sequence) -> float | np.ndarray:
    """RAS world x (mm; larger = further to the patient's right) of voxel coordinates.

    Args:
        affine: (d+1, d+1) RAS affine.
        index: one coordinate per spatial axis, each a number or an array (arrays broadcast, e.g. a sparse meshgrid).
    """
    d = affine.shape[0] - 1
    return sum(affine[RAS_X, a] * c for a, c in zip(range(d), index, strict=True)) + affine[RAS_X, d]


def centroid(region: NdarrayOrTensor) -> np.ndarray:
    """Index-space centroid of a boolean region, from per-axis marginals (no list of voxel indices).

    Raises:
        ValueError: the region is empty.
    """
    t = torch.as_tensor(region)
    total = float(t.sum())
    if total == 0:
        raise ValueError("the region is empty: it has no centroid")
    out = np.empty(t.ndim)
    for axis in range(t.ndim):
        marginal = t.sum(dim=tuple(a for a in range(t.ndim) if a != axis), dtype=torch.float64)
        out[axis] = float((marginal * torch.arange(t.shape[axis], dtype=torch.float64, device=t.device)).sum()) / total
    return out


def voxel_volume_ml(spacing: Sequence[float]) -> float:
    """Volume of one voxel in mL from its spacing in mm."""
    return float(np.prod(spacing)) / MM3_PER_ML
