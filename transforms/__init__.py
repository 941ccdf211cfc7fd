"""Reusable MONAI-style transforms for lung CT: SimpleITK I/O, LUNA16 labels, HU normalisation, crop/pad, octants.

Flat re-export of the public names of :mod:`transforms.io`, :mod:`transforms.functional`,
:mod:`transforms.array`, :mod:`transforms.dictionary` and :mod:`transforms.errors`.
"""

from __future__ import annotations

from .array import FILL_MIN, CropOrPad, DenormalizeHU, EnsureFinite, LungMask, NormalizeHU, Octants
from .dictionary import OCTANT_KEY, CropOrPadd, DenormalizeHUd, EnsureFinited, LungMaskd, NormalizeHUd, Octantsd
from .errors import InputError
from .functional import (
    BACKGROUND,
    DEFAULT_SPLIT,
    HU_MAX,
    HU_MIN,
    LABEL_MODES,
    LEFT_LUNG,
    LUNA16_HU_MEAN,
    LUNA16_HU_STD,
    LUNA16_LABELS,
    LUNA16_LEFT_LUNG,
    LUNA16_RIGHT_LUNG,
    LUNA16_TRACHEA,
    LUNG,
    RIGHT_LUNG,
    check_finite,
    denormalize_hu,
    map_luna16_labels,
    normalize_hu,
    octant_slices,
)
from .io import (
    SUPPORTED_SUFFIXES,
    SimpleITKReader,
    SimpleITKWriter,
    metatensor_to_sitk,
    read_image,
    sitk_to_metatensor,
    write_image,
    write_sitk,
)

__all__ = [
    # errors
    "InputError",
    # io
    "SUPPORTED_SUFFIXES",
    "SimpleITKReader",
    "SimpleITKWriter",
    "read_image",
    "write_image",
    "write_sitk",
    "metatensor_to_sitk",
    "sitk_to_metatensor",
    # constants
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
    "FILL_MIN",
    "OCTANT_KEY",
    # functional
    "map_luna16_labels",
    "normalize_hu",
    "denormalize_hu",
    "octant_slices",
    "check_finite",
    # array
    "LungMask",
    "NormalizeHU",
    "DenormalizeHU",
    "CropOrPad",
    "EnsureFinite",
    "Octants",
    # dictionary
    "LungMaskd",
    "NormalizeHUd",
    "DenormalizeHUd",
    "CropOrPadd",
    "EnsureFinited",
    "Octantsd",
]
