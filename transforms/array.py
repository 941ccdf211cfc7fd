"""Array transforms for lung CT: classes around :mod:`transforms.functional` and MONAI's crop/pad.

All take channel-first data (C, X, Y, Z) (MONAI's reader axis order) and keep MetaTensor meta.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.config import NdarrayOrTensor
from monai.transforms import ResizeWithPadOrCrop, SpatialCrop, Transform

from .errors import InputError
from .functional import (
    DEFAULT_SPLIT,
    HU_MAX,
    HU_MIN,
    LABEL_MODES,
    LUNA16_HU_MEAN,
    LUNA16_HU_STD,
    check_finite,
    denormalize_hu,
    map_luna16_labels,
    normalize_hu,
    octant_slices,
    resample_like_reference,
)

__all__ = ["FILL_MIN", "EnsureFinite", "LungMask", "NormalizeHU", "DenormalizeHU", "CropOrPad", "Octants",
           "ReferenceResample"]

FILL_MIN = "min"  # CropOrPad fill rule of the reference: the volume's own minimum
_PROBE = np.zeros((1, 1, 1, 1), dtype=np.float32)  # tiny input to validate arguments at construction


class LungMask(Transform):
    """LUNA16 labels {0, 3, 4, 5} -> uint8 lung labels; see :func:`transforms.functional.map_luna16_labels`.

    Args:
        mode: "binary" (reference default: every non-zero label, trachea included; 0/1 masks accepted),
            "lungs" (3|4 -> 1) or "left_right" (right = 1, left = 2, sides from world position).
    """

    def __init__(self, mode: str = "binary") -> None:
        if mode not in LABEL_MODES:
            raise InputError(f"mode '{mode}' is not supported; expected one of {LABEL_MODES}")
        self.mode = mode

    def __call__(self, img: NdarrayOrTensor, source: str | None = None) -> NdarrayOrTensor:
        """Args: img (C, X, Y, Z) LUNA16 labels (MetaTensor for "left_right"); source: name for errors.

        Returns: (C, X, Y, Z) uint8, same container and meta.
        """
        return map_luna16_labels(img, self.mode, source=source)


class NormalizeHU(Transform):
    """(clip(HU, hu_min, hu_max) - mean) / std with the reference's LUNA16 defaults (float32 out)."""

    def __init__(self, hu_min: float = HU_MIN, hu_max: float = HU_MAX, mean: float = LUNA16_HU_MEAN,
                 std: float = LUNA16_HU_STD) -> None:
        normalize_hu(_PROBE, hu_min, hu_max, mean, std)  # validate arguments at construction
        self.hu_min, self.hu_max, self.mean, self.std = hu_min, hu_max, mean, std

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: img (C, X, Y, Z) HU, any dtype. Returns: (C, X, Y, Z) float32, same container and meta."""
        return normalize_hu(img, self.hu_min, self.hu_max, self.mean, self.std)


class DenormalizeHU(Transform):
    """Inverse of :class:`NormalizeHU` for display: x * std + mean (HU, float32)."""

    def __init__(self, mean: float = LUNA16_HU_MEAN, std: float = LUNA16_HU_STD) -> None:
        denormalize_hu(_PROBE, mean, std)
        self.mean, self.std = mean, std

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: img (C, X, Y, Z) normalised. Returns: (C, X, Y, Z) float32 HU, same container and meta."""
        return denormalize_hu(img, self.mean, self.std)


class CropOrPad(ResizeWithPadOrCrop):
    """Centred crop-or-pad to a fixed spatial size, padding with the volume minimum (reference) or a constant.

    This is MONAI's ``ResizeWithPadOrCrop`` (``CenterSpatialCrop`` + symmetric constant ``SpatialPad``) with the
    pad value chosen per call, so ``.inverse()`` and ``Invertd`` restore the original shape and affine through
    MONAI's own inverse. The affine is shifted to the new first voxel (the reference kept the old origin:
    docs/reference.md).

    Centring vs the reference (offset int(diff / 2) per axis, counted in the file's array order): on the array it
    is given, padding puts diff // 2 before and the rest after, like the reference; cropping starts at
    size // 2 - target // 2, one voxel later than int(diff / 2) when an even size is cropped to an odd one
    (10 -> 5: start 3, reference 2). In the bundle this runs after ``Orientationd`` (RAS), which flips x and y of
    a LUNA16 file: on a flipped axis the window is centred from the other end, so it sits one voxel off the
    reference's whenever that axis's difference is odd. :class:`ReferenceResample` reproduces the reference's
    grid exactly (bundle key ``reference_grid``).

    Args:
        spatial_size: target (X, Y, Z) in voxels (the reference's ``Z_MAX Y_MAX X_MAX`` is (X_MAX, Y_MAX, Z_MAX) here);
            a non-positive entry keeps that axis.
        fill: ``"min"`` = the minimum of the whole input volume (all channels), computed per call; or a number.
    """

    def __init__(self, spatial_size: Sequence[int] | int, fill: str | float = FILL_MIN) -> None:
        if not (fill == FILL_MIN or (isinstance(fill, (int, float)) and not isinstance(fill, bool))):
            raise InputError(f"fill must be '{FILL_MIN}' or a number, got {fill!r}")
        super().__init__(spatial_size=spatial_size, mode="constant")
        self.fill = fill

    def __call__(self, img: NdarrayOrTensor, lazy: bool | None = None) -> NdarrayOrTensor:  # type: ignore[override]
        """Args: img (C, X, Y, Z), any dtype. Returns: (C, *spatial_size) MetaTensor, same dtype, shifted affine."""
        value = float(img.min()) if self.fill == FILL_MIN else float(self.fill)
        return super().__call__(img, mode="constant", lazy=lazy, value=value)


class ReferenceResample(Transform):
    """The reference's ``normalize_dataset.py`` grid: cubic-spline zoom, int16, centred crop/pad with the minimum.

    Reproduces the reference's preprocessed arrays voxel for voxel (the array as stored in the file, no
    reorientation) with a truthful affine; see :func:`transforms.functional.resample_like_reference`. The
    project's default (``Orientationd`` + ``Spacingd`` + :class:`CropOrPad`) is the better resampler; this one
    exists so that results compare with the reference's.

    Args:
        vox_spacing: target isotropic voxel size, mm.
        spatial_size: output (X, Y, Z) voxels.
        mask: the input is a LUNA16 mask: 0/1 uint8 out (the reference's threshold of the resampled labels).
    """

    def __init__(self, vox_spacing: float, spatial_size: Sequence[int], mask: bool = False) -> None:
        if not (isinstance(vox_spacing, (int, float)) and vox_spacing > 0):
            raise InputError(f"vox_spacing must be a positive number of mm, got {vox_spacing!r}")
        if len(spatial_size) != 3 or any(int(s) < 1 for s in spatial_size):
            raise InputError(f"spatial_size must be three positive voxel counts (X, Y, Z), got {spatial_size!r}")
        self.vox_spacing, self.spatial_size, self.mask = float(vox_spacing), tuple(map(int, spatial_size)), mask

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Args: img (C, X, Y, Z) MetaTensor. Returns: (C, *spatial_size) int16 (mask: uint8), new affine."""
        return resample_like_reference(img, self.vox_spacing, self.spatial_size, mask=self.mask)


class Octants(Transform):
    """The reference's deterministic partition into prod(split) non-overlapping blocks (8 octants by default).

    Each block is cut with MONAI's ``SpatialCrop``, so its affine is shifted to the block's origin. For random
    patches instead, MONAI's ``RandCropByPosNegLabeld`` is the alternative sampler.

    Args:
        split: blocks per spatial axis (x, y, z); each size must divide by its split.
    """

    def __init__(self, split: Sequence[int] = DEFAULT_SPLIT) -> None:
        self.split = tuple(int(s) for s in split)

    def __call__(self, img: NdarrayOrTensor) -> list[NdarrayOrTensor]:
        """Args: img (C, X, Y, Z). Returns: prod(split) MetaTensors (C, X/sx, Y/sy, Z/sz), C order over (x, y, z).

        Raises: InputError (a ValueError) naming the shape when a size does not divide by its split.
        """
        return [SpatialCrop(roi_slices=slices)(img) for slices in octant_slices(img.shape[1:], self.split)]


class EnsureFinite(Transform):
    """Raise :class:`InputError` (naming the file) if the image holds NaN/Inf; otherwise pass it through.

    Input and output: any shape, unchanged.
    """

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        return check_finite(img)
