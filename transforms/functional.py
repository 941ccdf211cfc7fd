"""Pure functions for lung CT preprocessing (numpy arrays, torch tensors and MetaTensors).

The maths behind :mod:`transforms.array`: LUNA16 label mapping (incl. left/right from world
position), HU clipping and normalisation with the reference's constants, and the reference's
octant partition. Inputs keep their container: numpy in -> numpy out, MetaTensor in ->
MetaTensor out with its meta (affine) intact.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.data import MetaTensor
from monai.data.utils import orientation_ras_lps
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, convert_to_dst_type

from .errors import InputError
from .geometry import affine_of, centroid, world_x

__all__ = [
    "check_finite",
    "HU_MIN",
    "HU_MAX",
    "LUNA16_HU_MEAN",
    "LUNA16_HU_STD",
    "LUNA16_LEFT_LUNG",
    "LUNA16_RIGHT_LUNG",
    "LUNA16_TRACHEA",
    "LUNA16_LABELS",
    "BACKGROUND",
    "LUNG",
    "RIGHT_LUNG",
    "LEFT_LUNG",
    "LABEL_MODES",
    "DEFAULT_SPLIT",
    "map_luna16_labels",
    "normalize_hu",
    "denormalize_hu",
    "octant_slices",
    "reference_grid",
    "resample_like_reference",
]

# HU window of the reference's data loader (torchbiomed's MIN_BOUND / MAX_BOUND; docs/reference.md).
HU_MIN = -1000.0
HU_MAX = 400.0
# Mean / std of the clipped, resampled LUNA16 CTs used by the reference: x <- (HU - mean) / std.
LUNA16_HU_MEAN = -642.794
LUNA16_HU_STD = 459.512

# The one place recording LUNA16 seg-lungs labels. A community convention only: LUNA16 does not document which of 3
# and 4 is which lung (docs/reference.md), so left/right output is never derived from these numbers, only from world
# position.
LUNA16_LEFT_LUNG = 3
LUNA16_RIGHT_LUNG = 4
LUNA16_TRACHEA = 5
LUNA16_LABELS = (0, LUNA16_LEFT_LUNG, LUNA16_RIGHT_LUNG, LUNA16_TRACHEA)
_LUNA16_LUNGS = (LUNA16_LEFT_LUNG, LUNA16_RIGHT_LUNG)

# Output labels (lungmask's convention: 1 = right lung, 2 = left lung).
BACKGROUND = 0
LUNG = 1
RIGHT_LUNG = 1
LEFT_LUNG = 2
_BINARY_LABELS = (BACKGROUND, LUNG)

LABEL_MODES = ("binary", "lungs", "left_right")
DEFAULT_SPLIT = (2, 2, 2)


def _plain(img: NdarrayOrTensor) -> torch.Tensor:
    """The data as a plain torch tensor (no MetaTensor bookkeeping), sharing memory where possible."""
    return img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)


def _source_name(img: NdarrayOrTensor, source: str | None) -> str:
    if source:
        return str(source)
    if isinstance(img, MetaTensor):
        return str(img.meta.get(ImageMetaKey.FILENAME_OR_OBJ, "<unnamed MetaTensor>"))
    return f"<{type(img).__name__} without a file name>"


def _left_right(spatial: torch.Tensor, affine: np.ndarray, name: str) -> torch.Tensor:
    """uint8 right (1) / left (2) lungs from LUNA16 lung labels, sides decided by world x of each centroid."""
    out = torch.zeros(spatial.shape, dtype=torch.uint8, device=spatial.device)
    present = [lab for lab in _LUNA16_LUNGS if bool((spatial == lab).any())]
    xs = {lab: float(world_x(affine, centroid(spatial == lab))) for lab in present}
    if len(present) == 2:
        if xs[present[0]] == xs[present[1]]:
            raise InputError(f"{name}: lung labels {present} have the same world x centroid; cannot tell left/right")
        right = max(present, key=xs.__getitem__)  # RAS: +x points to the patient's right
        sides = {right: RIGHT_LUNG, min(present, key=xs.__getitem__): LEFT_LUNG}
    elif len(present) == 1:
        centre_x = float(world_x(affine, np.asarray(spatial.shape, dtype=np.float64) / 2.0 - 0.5))
        side = RIGHT_LUNG if xs[present[0]] > centre_x else LEFT_LUNG
        warnings.warn(f"{name}: only lung label {present[0]} present; side taken from the field-of-view centre")
        sides = {present[0]: side}
    else:
        sides = {}
    for lab, side in sides.items():
        out[spatial == lab] = side
    return out


def _check_labels(data: torch.Tensor, mode: str, name: str) -> None:
    """Raise InputError unless ``data`` holds LUNA16 labels (or 0/1 in binary mode)."""
    values = torch.unique(data).tolist()
    allowed = set(LUNA16_LABELS)
    if mode == "binary" and set(values) <= set(_BINARY_LABELS):
        allowed = set(_BINARY_LABELS)
    unexpected = sorted(v for v in values if v not in allowed)
    if unexpected:
        expected = f"LUNA16 labels {LUNA16_LABELS}" + (f" or binary {_BINARY_LABELS}" if mode == "binary" else "")
        raise InputError(f"{name}: unexpected label values {unexpected[:10]} in mask; expected {expected}")


def map_luna16_labels(
    mask: NdarrayOrTensor, mode: str = "binary", affine: NdarrayOrTensor | None = None, source: str | None = None
) -> NdarrayOrTensor:
    """Map a LUNA16 ``seg-lungs`` mask {0, 3, 4, 5} to uint8 lung labels.

    Modes:
        - ``"binary"``: the reference's binary lung, every non-zero label is lung (trachea 5 included) -> {0, 1}.
          Already-binary 0/1 masks (e.g. the reference's ``normalized_lung_mask`` files) are accepted and kept.
        - ``"lungs"``: lungs without trachea, 3|4 -> 1, 5 -> 0.
        - ``"left_right"``: right lung = 1, left lung = 2 (lungmask's convention), trachea -> 0. The side of each
          lung label is decided from the world (RAS) x of its centroid: +x points to the patient's right, so the
          label with the larger x is the right lung. Never from the label number. With only one lung label the
          field-of-view centre is the reference (with a warning).

    Args:
        mask: (X, Y, Z) or channel-first (C, X, Y, Z) labels, any numeric dtype with integral values.
        mode: one of :data:`LABEL_MODES`.
        affine: (4, 4) RAS affine for ``"left_right"``; default: the MetaTensor's own (LPS meta converted).
        source: name used in error messages; default: meta ``filename_or_obj``.

    Returns:
        uint8 labels of the same shape and container (MetaTensor keeps its meta and affine).

    Raises:
        InputError: unknown mode, values other than LUNA16's {0, 3, 4, 5} (or {0, 1} in binary mode) - the
            message names the file and the values found - or ``"left_right"`` without an affine.
    """
    if mode not in LABEL_MODES:
        raise InputError(f"mode '{mode}' is not supported; expected one of {LABEL_MODES}")
    name = _source_name(mask, source)
    data = _plain(mask)
    _check_labels(data, mode, name)
    if mode == "binary":
        out = (data != BACKGROUND).to(torch.uint8)
    elif mode == "lungs":
        out = ((data == LUNA16_LEFT_LUNG) | (data == LUNA16_RIGHT_LUNG)).to(torch.uint8)
    else:
        spatial_ndim = min(data.ndim, 3)
        ras = affine_of(mask, affine, spatial_ndim)
        if ras is None:
            raise InputError(f"{name}: mode 'left_right' needs an affine (pass affine= or a MetaTensor)")
        flat = data.reshape((-1, *data.shape[data.ndim - spatial_ndim:]))
        out = torch.stack([_left_right(channel, ras, name) for channel in flat]).reshape(data.shape)
    return convert_to_dst_type(out, dst=mask, dtype=torch.uint8 if isinstance(mask, torch.Tensor) else np.uint8)[0]


def _check_window(hu_min: float, hu_max: float, std: float) -> None:
    if not hu_min < hu_max:
        raise InputError(f"hu_min ({hu_min}) must be smaller than hu_max ({hu_max})")
    if not std > 0:
        raise InputError(f"std must be positive, got {std}")


def normalize_hu(
    img: NdarrayOrTensor,
    hu_min: float = HU_MIN,
    hu_max: float = HU_MAX,
    mean: float = LUNA16_HU_MEAN,
    std: float = LUNA16_HU_STD,
) -> NdarrayOrTensor:
    """The reference's intensity normalisation: (clip(HU, hu_min, hu_max) - mean) / std.

    With the defaults, [-1000, 400] HU maps to [-0.7774, 2.2694] and -642.794 HU to 0.

    Args:
        img: CT in HU, any shape and numeric dtype.
        hu_min, hu_max: clipping window in HU (hu_min < hu_max).
        mean, std: normalisation constants in HU (std > 0).

    Returns:
        float32 array of the same shape and container (MetaTensor meta kept).
    """
    _check_window(hu_min, hu_max, std)
    out = (_plain(img).to(torch.float32).clamp(hu_min, hu_max) - mean) / std
    return convert_to_dst_type(out, dst=img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


def denormalize_hu(img: NdarrayOrTensor, mean: float = LUNA16_HU_MEAN, std: float = LUNA16_HU_STD) -> NdarrayOrTensor:
    """Inverse of :func:`normalize_hu` for display: x * std + mean, in HU (clipped values stay clipped).

    Args:
        img: normalised intensities, any shape.
        mean, std: the constants used by :func:`normalize_hu` (std > 0).

    Returns:
        float32 HU of the same shape and container.
    """
    if not std > 0:
        raise InputError(f"std must be positive, got {std}")
    out = _plain(img).to(torch.float32) * std + mean
    return convert_to_dst_type(out, dst=img, dtype=torch.float32 if isinstance(img, torch.Tensor) else np.float32)[0]


def octant_slices(spatial_shape: Sequence[int], split: Sequence[int] = DEFAULT_SPLIT) -> list[tuple[slice, ...]]:
    """The reference's non-overlapping partition of a volume into prod(split) equal blocks.

    Args:
        spatial_shape: (X, Y, Z) voxels.
        split: blocks per axis, same length; each size must divide by its split.

    Returns:
        One tuple of slices per block, in C order over the (x, y, z) splits: index = (ix * sy + iy) * sz + iz.

    Raises:
        InputError (a ValueError): a size does not divide by its split, or split is not positive per axis.
    """
    shape, parts = tuple(int(s) for s in spatial_shape), tuple(int(s) for s in split)
    if len(parts) != len(shape) or any(p < 1 for p in parts):
        raise InputError(f"split {parts} must give one positive count per axis of spatial shape {shape}")
    if any(s % p for s, p in zip(shape, parts)):
        raise InputError(f"spatial shape {shape} must be divisible by split {parts} for octants")
    steps = [s // p for s, p in zip(shape, parts)]
    return [
        tuple(slice(i * step, (i + 1) * step) for i, step in zip(index, steps))
        for index in itertools.product(*(range(p) for p in parts))
    ]


def check_finite(img: NdarrayOrTensor, source: str | None = None) -> NdarrayOrTensor:
    """Return ``img`` unchanged if every voxel is finite; otherwise raise naming the file.

    Catches NaN/Inf volumes before an integer cast turns them into plausible-looking numbers.

    Args:
        img: any array/tensor (a MetaTensor's ``filename_or_obj`` names the file in the message).
        source: file name to report when ``img`` carries none.

    Raises:
        InputError: the image holds NaN or infinite values.
    """
    t = _plain(img)
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise InputError(f"{_source_name(img, source)}: {bad} of {t.numel()} voxels are NaN or infinite; "
                         "fix or exclude this volume")
    return img


#: a volume of the target size whose spacing is within this fraction of ``vox_spacing`` is on the reference's grid
#: already: scipy's zoom gives a true spacing of old x (n - 1) / (n' - 1), within 1 / (n' - 1) of ``vox_spacing``
ON_REFERENCE_GRID_RTOL = 0.05


def reference_grid(
    shape: Sequence[int], spacing: Sequence[float], vox_spacing: float, spatial_size: Sequence[int]
) -> tuple[tuple[int, ...], tuple[float, ...], tuple[int, ...]]:
    """The reference's ``normalize_dataset.py`` grid per axis (any axis order, as long as all arguments share it).

    Resampled size = round(size x spacing / vox_spacing) (numpy's round, halves to even). scipy's ``zoom`` puts the
    first and last voxel centres on the input's, so one resampled voxel is (size - 1) / (new size - 1) input voxels.
    The centred crop or pad to ``spatial_size`` starts at offset int(|difference| / 2): output voxel 0 is resampled
    voxel ``start`` (negative when padding).

    Returns:
        (resampled size, input voxels per resampled voxel, start) per axis.
    """
    size = tuple(int(n) for n in np.round(np.asarray(shape, float) * np.asarray(spacing, float) / float(vox_spacing)))
    if min(size) < 1:
        raise InputError(f"a {tuple(shape)} volume at spacing {tuple(spacing)} mm resamples to {size} voxels at "
                         f"{vox_spacing} mm: too small")
    step = tuple((n - 1) / (m - 1) if m > 1 else 1.0 for n, m in zip(shape, size))
    start = tuple(int((m - t) / 2) if m > t else -int((t - m) / 2) for m, t in zip(size, spatial_size))
    return size, step, start


def resample_like_reference(
    img: NdarrayOrTensor,
    vox_spacing: float,
    spatial_size: Sequence[int],
    mask: bool = False,
    spacing: Sequence[float] | None = None,
    source: str | None = None,
) -> NdarrayOrTensor:
    """The reference's ``normalize_dataset.py`` on one volume, voxel for voxel, with its true geometry.

    The array is taken as stored in the file (no reorientation, like the reference, which ignores the direction
    matrix). Per channel: ``scipy.ndimage.zoom`` in the input's dtype (cubic spline, ``mode="nearest"``, zoom
    factor = new size / old size from :func:`reference_grid`), cast to int16, centred crop/pad to
    ``spatial_size`` filled with the resampled volume's minimum; masks then become 0/1 (< 1 -> 0, > 0 -> 1,
    so trachea counts as lung, like the reference's binary masks). scipy's own zoom is used because its
    corner-aligned grid and integer rounding are what the reference's files hold.

    A volume that already has ``spatial_size`` at ``vox_spacing`` (within :data:`ON_REFERENCE_GRID_RTOL`), such as a
    file written by ``python -m pipeline preprocess --reference``, is only cast (and thresholded, for masks), so
    training on such files sees the arrays the command wrote, as the reference's training saw its own.

    Unlike the reference, the affine of a MetaTensor output is the true one: spacing old spacing x (size - 1) /
    (new size - 1) per axis (the reference writes ``vox_spacing``) and the origin moved to output voxel 0
    (the reference keeps the input's), direction unchanged.

    Args:
        img: (C, X, Y, Z) volume, a MetaTensor (its affine gives the spacing) or an array with ``spacing``.
        vox_spacing: target isotropic voxel size, mm (the reference's ``vox_spacing``).
        spatial_size: output (X, Y, Z) voxels (the reference's ``Z_MAX Y_MAX X_MAX`` reversed).
        mask: ``True`` for a LUNA16 mask (labels {0, 3, 4, 5} or 0/1, checked): output uint8 0/1; else int16.
        spacing: (x, y, z) input voxel size in mm; default: the MetaTensor's affine.
        source: name used in error messages; default: meta ``filename_or_obj``.

    Returns:
        (C, *spatial_size), int16 (uint8 for masks), same container (MetaTensor: new affine, meta kept).

    Raises:
        InputError: mask values that are not LUNA16 labels, no spacing, or a volume too small to resample.
    """
    from scipy import ndimage

    name = _source_name(img, source)
    data = _plain(img)
    if data.ndim != 4:
        raise InputError(f"{name}: expected a channel-first (C, X, Y, Z) volume, got shape {tuple(data.shape)}")
    affine = affine_of(img, None, 3)
    if spacing is None:
        if affine is None:
            raise InputError(f"{name}: pass spacing= for a plain array (no affine to take the voxel size from)")
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if mask:
        _check_labels(data, "binary", name)
    size = tuple(int(s) for s in spatial_size)
    if tuple(data.shape[1:]) == size and np.allclose(spacing, vox_spacing, rtol=ON_REFERENCE_GRID_RTOL, atol=0):
        # already on the grid (a file of preprocess --reference, whose true spacing is not exactly vox_spacing)
        out = (data > 0).to(torch.uint8) if mask else data.to(torch.int16)
        dtype = out.dtype if isinstance(img, torch.Tensor) else out.numpy().dtype
        return convert_to_dst_type(out, dst=img, dtype=dtype)[0]
    new_size, step, start = reference_grid(data.shape[1:], spacing, vox_spacing, size)
    channels = []
    for channel in data.cpu().numpy():
        zyx = channel.T  # the reference's (z, y, x) array: same arithmetic, axis for axis
        factor = np.asarray(new_size[::-1], float) / np.asarray(zyx.shape, float)
        zoomed = ndimage.zoom(zyx, factor, mode="nearest").astype(np.int16)
        out = np.full(size[::-1], zoomed.min(), dtype=np.int16)
        dst, src = [], []
        for n, t, s in zip(zoomed.shape, size[::-1], start[::-1]):
            length = min(n, t)
            dst.append(slice(max(-s, 0), max(-s, 0) + length))
            src.append(slice(max(s, 0), max(s, 0) + length))
        out[tuple(dst)] = zoomed[tuple(src)]
        if mask:
            out = (out > 0).astype(np.uint8)
        channels.append(out.T)
    result = torch.from_numpy(np.ascontiguousarray(np.stack(channels)))
    if not isinstance(img, MetaTensor):
        dtype = result.numpy().dtype if isinstance(img, np.ndarray) else result.dtype
        return convert_to_dst_type(result, dst=img, dtype=dtype)[0]
    scale = np.diag([*step, 1.0])
    shift = np.eye(4)
    shift[:3, 3] = start
    new_affine = affine @ scale @ shift
    if img.meta.get(MetaKeys.SPACE, SpaceKeys.RAS) == SpaceKeys.LPS:
        new_affine = orientation_ras_lps(new_affine)
    meta = {k: v for k, v in img.meta.items() if k != MetaKeys.AFFINE}
    return MetaTensor(result, affine=torch.as_tensor(new_affine, dtype=torch.float64), meta=meta)
