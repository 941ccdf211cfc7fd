"""Everything that runs: LUNA16 data, synthetic data, preprocessing, devices, engines, handlers, segmentation.

Submodules are imported on first use (``pipeline.luna16``, ``pipeline.device`` ...), so that
``import pipeline`` stays cheap and never imports ``torch_npu`` by itself.
"""

from __future__ import annotations

import importlib

__all__ = ["cli", "data", "device", "engines", "handlers", "luna16", "preprocess", "segment", "synthetic"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
