"""The lung-segmentation tool: any CT in, a lung mask in the CT's own geometry out, with volumes and a QC picture.

- :mod:`~pipeline.inference.segmenter`: :class:`~pipeline.inference.segmenter.LungSegmenter`, built from a bundle
  config (``inference.json``), and the batch driver;
- :mod:`~pipeline.inference.sides`: left and right lung by world position, per-lung cleanup;
- :mod:`~pipeline.inference.report`: volumes and mean HU per lung, ``lung_stats.csv``, the QC picture;
- :mod:`~pipeline.inference.outputs`: how outputs are named (also used by ``inference.json``).

Modules are imported on first use.
"""

from __future__ import annotations

import importlib

__all__ = ["outputs", "report", "segmenter", "sides"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
