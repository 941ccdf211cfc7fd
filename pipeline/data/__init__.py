"""Data: LUNA16 on disk, the user's CT inputs, their checks, datasets for training, synthetic phantoms.

- :mod:`~pipeline.data.luna16`: layouts, pairing by series uid, the split, uid lists, datalists;
- :mod:`~pipeline.data.inputs`: the CT files and DICOM folders a user points the segment tool at;
- :mod:`~pipeline.data.checks`: what is checked of a CT (and its mask) before any compute;
- :mod:`~pipeline.data.datasets`: cached volumes, one training sample per octant, broken cases left out;
- :mod:`~pipeline.data.synthetic`: chest-CT phantoms with lung masks in LUNA16's layout.

Modules are imported on first use.
"""

from __future__ import annotations

import importlib

__all__ = ["checks", "datasets", "inputs", "luna16", "synthetic"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
