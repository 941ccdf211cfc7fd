"""Everything that runs: LUNA16 data, synthetic data, preprocessing, devices, engines, handlers, segmentation.

Submodules are imported on first use (``pipeline.luna16``, ``pipeline.device`` ...), so that
``import pipeline`` stays cheap and never imports ``torch_npu`` by itself.
"""

from __future__ import annotations

import importlib

__all__ = [
    "checkpoints",
    "cli",
    "data",
    "device",
    "engines",
    "evaluation",
    "excepthook",
    "export",
    "files",
    "handlers",
    "inputs",
    "luna16",
    "presets",
    "preprocess",
    "segment",
    "synthetic",
    "train_cli",
]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# expected errors inside `python -m monai.bundle ...` runs print as one line (see pipeline.excepthook)
from pipeline import excepthook as _excepthook  # noqa: E402

_excepthook.install()
