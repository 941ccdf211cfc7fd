"""Dictionary ("d") wrappers of :mod:`transforms.array`, for MONAI ``Compose`` pipelines and bundle configs.

A typical deterministic LUNA16 chain (spatial sizes are (X, Y, Z): the reference's ``Z_MAX Y_MAX X_MAX``
128 160 160 is ``spatial_size=(160, 160, 128)`` here)::

    LoadImaged(["image", "label"], reader="transforms.io.SimpleITKReader")
    EnsureChannelFirstd(["image", "label"])
    Orientationd(["image", "label"], axcodes="RAS")
    Spacingd(["image", "label"], pixdim=(2.5, 2.5, 2.5), mode=("bilinear", "nearest"))
    LungMaskd("label")                                   # 3, 4, 5 -> 1 (reference binary lung)
    CropOrPadd(["image", "label"], (160, 160, 128), fill=("min", 0))
    NormalizeHUd("image")
    Octantsd(["image", "label"], label_key="label")      # list of up to 8 dicts

Resampling is MONAI's ``Spacingd`` (linear for CT, nearest for masks). The reference resampled masks with a
cubic spline (``scipy.ndimage.zoom`` order 3, then int16 and a threshold), which smears labels and can invent
values (docs/reference.md); nearest keeps them. :class:`ReferenceResampled` replaces ``Orientationd`` +
``Spacingd`` + ``CropOrPadd`` by the reference's own grid, to compare with its results.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import InvertibleTransform, MapTransform

from .array import (
    FILL_MIN,
    CropOrPad,
    DenormalizeHU,
    EnsureFinite,
    LungMask,
    NormalizeHU,
    Octants,
    ReferenceResample,
)
from .errors import InputError
from .functional import DEFAULT_SPLIT, HU_MAX, HU_MIN, LUNA16_HU_MEAN, LUNA16_HU_STD

__all__ = ["OCTANT_KEY", "EnsureFinited", "LungMaskd", "NormalizeHUd", "DenormalizeHUd", "CropOrPadd", "Octantsd",
           "ReferenceResampled"]

OCTANT_KEY = "octant"  # int index 0..prod(split)-1 added to each dict by Octantsd


class LungMaskd(MapTransform):
    """Dict wrapper of :class:`transforms.array.LungMask`: LUNA16 labels {0, 3, 4, 5} -> uint8 lung labels.

    Args:
        keys: label keys. mode: "binary" | "lungs" | "left_right". allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, mode: str = "binary", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = LungMask(mode)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Each key: (C, X, Y, Z) LUNA16 labels -> (C, X, Y, Z) uint8; errors name the key's file."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d


class NormalizeHUd(MapTransform):
    """Dict wrapper of :class:`transforms.array.NormalizeHU`: (clip(HU) - mean) / std, float32."""

    def __init__(self, keys: KeysCollection, hu_min: float = HU_MIN, hu_max: float = HU_MAX,
                 mean: float = LUNA16_HU_MEAN, std: float = LUNA16_HU_STD, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.normalizer = NormalizeHU(hu_min, hu_max, mean, std)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Each key: (C, X, Y, Z) HU -> (C, X, Y, Z) float32."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.normalizer(d[key])
        return d


class DenormalizeHUd(MapTransform):
    """Dict wrapper of :class:`transforms.array.DenormalizeHU`: back to HU for display."""

    def __init__(self, keys: KeysCollection, mean: float = LUNA16_HU_MEAN, std: float = LUNA16_HU_STD,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.denormalizer = DenormalizeHU(mean, std)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Each key: (C, X, Y, Z) normalised -> (C, X, Y, Z) float32 HU."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.denormalizer(d[key])
        return d


class CropOrPadd(MapTransform, InvertibleTransform):
    """Dict wrapper of :class:`transforms.array.CropOrPad`; invertible (``Invertd`` / ``.inverse``).

    Args:
        keys: keys to crop/pad, each (C, X, Y, Z).
        spatial_size: target (X, Y, Z) voxels.
        fill: one value for all keys or one per key; ``"min"`` (the volume's minimum, the reference's rule) or a
            number. For (image, label) use ``("min", 0)``: CT padded with its own minimum, the mask with background.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int] | int,
                 fill: str | float | Sequence[str | float] = FILL_MIN, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        fills = (fill,) if isinstance(fill, (str, int, float)) else tuple(fill)
        if len(fills) not in (1, len(self.keys)):
            raise InputError(f"fill {fill!r}: give one value or one per key ({len(self.keys)} keys: {self.keys})")
        # one array transform per key: its pad value differs, and MONAI's inverse checks the transform's identity
        fills = fills * len(self.keys) if len(fills) == 1 else fills
        self.croppers = {key: CropOrPad(spatial_size, value) for key, value in zip(self.keys, fills)}

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Each key: (C, X, Y, Z) -> (C, *spatial_size) MetaTensor, same dtype, affine shifted."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.croppers[key](d[key])
        return d

    def inverse(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Undo the crop/pad of each key with MONAI's inverse: original shape and affine restored."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.croppers[key].inverse(d[key])
        return d


class ReferenceResampled(MapTransform):
    """Dict wrapper of :class:`transforms.array.ReferenceResample`: the reference's grid for CT and mask.

    Args:
        keys: keys to resample, each (C, X, Y, Z) as read from its file.
        vox_spacing: target isotropic voxel size, mm.
        spatial_size: output (X, Y, Z) voxels.
        mask: one flag for all keys or one per key; ``(False, True)`` for (image, label).
        label_mode: the mode of the ``LungMaskd`` that follows; the reference's threshold makes binary lung
            masks (trachea included), so only ``"binary"`` is accepted.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, vox_spacing: float, spatial_size: Sequence[int],
                 mask: bool | Sequence[bool] = False, label_mode: str = "binary",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if label_mode != "binary":
            raise InputError(f"label_mode '{label_mode}' cannot be used with the reference's grid: it thresholds the "
                             "resampled mask into one binary lung label; use label_mode 'binary'")
        flags = (mask,) * len(self.keys) if isinstance(mask, bool) else tuple(mask)
        if len(flags) != len(self.keys):
            raise InputError(f"mask {mask!r}: give one flag or one per key ({len(self.keys)} keys: {self.keys})")
        self.resamplers = {key: ReferenceResample(vox_spacing, spatial_size, flag)
                           for key, flag in zip(self.keys, flags)}

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        """Each key: (C, X, Y, Z) -> (C, *spatial_size), int16 (masks uint8 0/1), true affine."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.resamplers[key](d[key])
        return d


class Octantsd(MapTransform):
    """The reference's octant sampler: one dict per non-empty octant (deterministic, no randomness).

    Every key is cut into the same prod(split) blocks (affines shifted to each block's origin); other entries are
    shared. Each output dict gets ``"octant"`` = the block index (C order over the (x, y, z) splits). With
    ``drop_empty``, blocks whose ``label_key`` block has no non-zero voxel are dropped, as the reference does for
    train and test; a volume without foreground then yields an empty list. MONAI's ``RandCropByPosNegLabeld`` is
    the random alternative.

    Args:
        keys: keys to split, each (C, X, Y, Z). label_key: key deciding emptiness. split: blocks per (x, y, z) axis.
        drop_empty: drop blocks without foreground. allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, label_key: str = "label", split: Sequence[int] = DEFAULT_SPLIT,
                 drop_empty: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key, self.drop_empty = label_key, drop_empty
        self.splitter = Octants(split)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> list[dict[Hashable, NdarrayOrTensor]]:
        """Returns: list of dicts, each key (C, X/sx, Y/sy, Z/sz) plus ``"octant"``: int."""
        d = dict(data)
        blocks = {key: self.splitter(d[key]) for key in self.key_iterator(d)}
        keep = None
        if self.drop_empty:
            if self.label_key not in d:
                raise InputError(f"Octantsd: label_key '{self.label_key}' not in data (keys: {list(d)})")
            labels = blocks.get(self.label_key) or self.splitter(d[self.label_key])
            keep = [bool((block != 0).any()) for block in labels]
        n_blocks = len(next(iter(blocks.values()))) if blocks else 0
        out = []
        for index in range(n_blocks):
            if keep is not None and not keep[index]:
                continue
            item = dict(d)
            item.update({key: parts[index] for key, parts in blocks.items()})
            item[OCTANT_KEY] = index
            out.append(item)
        return out


class EnsureFinited(MapTransform):
    """Dict wrapper of :class:`transforms.array.EnsureFinite`: fail early on NaN/Inf volumes."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.check = EnsureFinite()

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.check(d[key])
        return d
