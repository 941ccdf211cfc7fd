"""The preprocessing chains, built in one place from hyperparameters that the bundle configs hold.

Training, validation, the ``normalize_dataset`` command (:mod:`pipeline.preprocess`), bundle
inference and the segmentation tool (:mod:`pipeline.segment`) all build their transforms here, so
there is one preprocessing implementation, not several that can drift apart.

Spatial sizes are MONAI's (X, Y, Z) order: the seed's ``Z_MAX Y_MAX X_MAX = 128 160 160`` is
``spatial_size = (160, 160, 128)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import (
    CastToTyped,
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    Orientationd,
    Spacingd,
)

from transforms import CropOrPadd, EnsureFinited, LungMaskd, NormalizeHUd, Octantsd, SimpleITKReader
from transforms.functional import HU_MAX, HU_MIN, LUNA16_HU_MEAN, LUNA16_HU_STD
from transforms.io import SUPPORTED_SUFFIXES

__all__ = [
    "LikeInputLayout",
    "deterministic_transforms",
    "image_transforms",
    "intensity_transforms",
    "octant_transform",
    "output_path_like_input",
    "source_name_formatter",
]


def _as_triple(value: float | Sequence[float]) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    value = tuple(float(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"expected one value or three (x, y, z), got {value}")
    return value  # type: ignore[return-value]


def deterministic_transforms(
    image_key: str = "image",
    label_key: str | None = "label",
    spacing: float | Sequence[float] = 2.5,
    spatial_size: Sequence[int] | None = (160, 160, 128),
    label_mode: str = "binary",
    orientation: str | None = "RAS",
    image_fill: str | float = "min",
    load: bool = True,
) -> list:
    """Load, orient, resample to ``spacing`` mm, map LUNA16 labels, crop/pad: the cacheable part.

    Output per key: image (1, X, Y, Z) int16 HU, label (1, X, Y, Z) uint8 {0, 1} (or {0, 1, 2} for
    ``label_mode="left_right"``), both on the same grid; MetaTensors whose affine is the new geometry.

    Args:
        image_key: CT key.
        label_key: mask key (``None`` for images only).
        spacing: target voxel size in mm (the seed's ``vox_spacing``), one value or (x, y, z).
        spatial_size: (X, Y, Z) voxels after centred crop/pad (``None``: no crop/pad).
        label_mode: ``"binary"`` (every LUNA16 label is lung, the reference), ``"lungs"`` (no
            trachea) or ``"left_right"`` (1 right, 2 left, by world position).
        orientation: axis codes to reorient to (``None``: keep the file's orientation).
        image_fill: CT padding value: ``"min"`` (the reference: the volume minimum) or HU.
        load: start with ``LoadImaged`` + ``EnsureChannelFirstd`` (set ``False`` for in-memory inputs).
    """
    keys = [image_key] + ([label_key] if label_key else [])
    xf: list = []
    if load:
        xf += [
            LoadImaged(keys=keys, reader=SimpleITKReader(), image_only=True),
            EnsureChannelFirstd(keys=keys, channel_dim="no_channel"),
        ]
    xf.append(EnsureFinited(keys=image_key))  # NaN/Inf would survive resampling and the int16 cast unnoticed
    if orientation:
        xf.append(Orientationd(keys=keys, axcodes=orientation))
    # linear for CT, nearest for the mask (the reference spline-interpolates masks too: vnet.md B9)
    xf.append(Spacingd(keys=keys, pixdim=_as_triple(spacing), mode=["bilinear", "nearest"][: len(keys)],
                       padding_mode=["border", "zeros"][: len(keys)], dtype=np.float32))  # no float64 copy
    if label_key:
        xf.append(LungMaskd(keys=label_key, mode=label_mode))
    if spatial_size is not None:
        fills = [image_fill] + ([0] if label_key else [])
        xf.append(CropOrPadd(keys=keys, spatial_size=tuple(int(s) for s in spatial_size), fill=fills))
    # compact cache: HU fits int16 (the reference also stores int16), labels uint8
    xf.append(CastToTyped(keys=keys, dtype=[np.int16, np.uint8][: len(keys)]))
    return xf


def intensity_transforms(
    image_key: str = "image",
    label_key: str | None = "label",
    hu_window: Sequence[float] = (HU_MIN, HU_MAX),
    mean: float = LUNA16_HU_MEAN,
    std: float = LUNA16_HU_STD,
) -> list:
    """Clip to ``hu_window`` and normalise ``(HU - mean) / std`` (float32); labels to int64 tensors."""
    xf: list = [NormalizeHUd(keys=image_key, hu_min=hu_window[0], hu_max=hu_window[1], mean=mean, std=std)]
    xf.append(EnsureTyped(keys=image_key, dtype=np.float32, track_meta=True))
    if label_key:
        xf.append(EnsureTyped(keys=label_key, dtype=np.int64, track_meta=True))
    return xf


def octant_transform(
    image_key: str = "image", label_key: str = "label", split: Sequence[int] = (2, 2, 2), drop_empty: bool = True
) -> Octantsd:
    """The reference's octant partition: one training sample per lung-containing sub-volume."""
    return Octantsd(keys=[image_key, label_key], label_key=label_key, split=tuple(split), drop_empty=drop_empty)


def image_transforms(
    image_key: str = "image",
    spacing: float | Sequence[float] = 2.5,
    hu_window: Sequence[float] = (HU_MIN, HU_MAX),
    mean: float = LUNA16_HU_MEAN,
    std: float = LUNA16_HU_STD,
    orientation: str | None = "RAS",
    load: bool = True,
) -> Compose:
    """Inference preprocessing for any CT: load, orient, resample, normalise; no crop (sliding window).

    Invertible with MONAI's ``Invertd`` back to the input's own geometry.
    """
    xf = deterministic_transforms(image_key, None, spacing, None, orientation=orientation, load=load)
    xf = [t for t in xf if not isinstance(t, CastToTyped)]
    xf += intensity_transforms(image_key, None, hu_window, mean, std)
    return Compose(xf)




def output_path_like_input(source: str, output_dir: str, postfix: str = "_lung", default_ext: str = ".nii.gz") -> str:
    """``output_dir/<input name><postfix><input's extension>``; a DICOM series folder (or any other input) gives NIfTI.

    Examples:
        ``/data/ct/case1.mhd`` -> ``out/case1_lung.mhd``; ``/dicom/series42/`` -> ``out/series42_lung.nii.gz``.
    """
    import os

    name = os.path.basename(os.path.normpath(str(source)))
    low = name.lower()
    ext = next((name[len(name) - len(s):] for s in SUPPORTED_SUFFIXES if low.endswith(s)), "")
    stem = name[: len(name) - len(ext)] if ext else name
    return os.path.join(str(output_dir), f"{stem}{postfix}{ext or default_ext}")


class LikeInputLayout:
    """A MONAI ``FolderLayoutBase`` for ``SaveImage(d)``: name outputs after the input, in its format.

    Use with ``output_ext=""`` and ``output_name_formatter=pipeline.presets.source_name_formatter``.
    MONAI's own ``FolderLayout`` appends one fixed extension to every output; a researcher's folder
    mixes .mhd, .nii.gz and DICOM, and each mask should keep its input's format.
    """

    def __init__(self, output_dir: str, postfix: str = "_lung", default_ext: str = ".nii.gz") -> None:
        self.output_dir = output_dir
        self.postfix = postfix
        self.default_ext = default_ext

    def filename(self, source: str = "", **kwargs) -> str:
        import os

        os.makedirs(self.output_dir, exist_ok=True)
        return output_path_like_input(source, self.output_dir, self.postfix, self.default_ext)


def source_name_formatter(metadict: dict, saver: object) -> dict:
    """``output_name_formatter`` passing the input path (``filename_or_obj``) to :class:`LikeInputLayout`."""
    return {"source": str(metadict.get("filename_or_obj", "output"))}
