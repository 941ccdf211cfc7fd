"""Reusable MONAI-style transforms for lung CT: SimpleITK I/O, LUNA16 labels, HU normalisation, crop/pad, octants.

Flat re-export of the public names of :mod:`transforms.io`, :mod:`transforms.geometry`,
:mod:`transforms.functional`, :mod:`transforms.array`, :mod:`transforms.dictionary` and
:mod:`transforms.errors`. The submodules are imported on first use of a name, so that
``from transforms.errors import InputError`` does not import MONAI.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "errors": ("InputError",),
    "io": ("SUPPORTED_SUFFIXES", "SimpleITKReader", "SimpleITKWriter", "metatensor_to_sitk", "read_image",
           "register_writer", "sitk_to_metatensor", "write_image", "write_sitk"),
    "geometry": ("MM3_PER_ML", "RAS_X", "affine_of", "centroid", "lps_geometry", "sitk_affine", "voxel_volume_ml",
                 "world_x"),
    "functional": ("BACKGROUND", "DEFAULT_SPLIT", "HU_MAX", "HU_MIN", "LABEL_MODES", "LEFT_LUNG", "LUNA16_HU_MEAN",
                   "LUNA16_HU_STD", "LUNA16_LABELS", "LUNA16_LEFT_LUNG", "LUNA16_RIGHT_LUNG", "LUNA16_TRACHEA", "LUNG",
                   "RIGHT_LUNG", "check_finite", "denormalize_hu", "map_luna16_labels", "normalize_hu",
                   "octant_slices", "reference_grid", "resample_like_reference"),
    "array": ("FILL_MIN", "CropOrPad", "DenormalizeHU", "EnsureFinite", "LungMask", "NormalizeHU", "Octants",
              "ReferenceResample"),
    "dictionary": ("OCTANT_KEY", "CropOrPadd", "DenormalizeHUd", "EnsureFinited", "LungMaskd", "NormalizeHUd",
                   "Octantsd", "ReferenceResampled"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
