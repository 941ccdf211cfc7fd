"""Everything that runs: data, devices, training, inference, the bundle's configs and the command line.

Subpackages and modules, by concern:

- :mod:`pipeline.data`: LUNA16 on disk (layouts, split, uid lists), datasets, synthetic phantoms, input checks;
- :mod:`pipeline.device`: CPU / CUDA / Ascend NPU selection, mixed precision, distribution (the only place that
  touches ``torch.cuda``, ``torch.npu`` or ``torch_npu``);
- :mod:`pipeline.training`: engines, losses, metrics, handlers, checkpoints, evaluation;
- :mod:`pipeline.inference`: the segmentation tool (segmenter, left/right, statistics and QC picture, output names);
- :mod:`pipeline.config`: where the bundle is and how its configs are read;
- :mod:`pipeline.preprocess`: the reference's ``normalize_dataset`` command, built from a bundle config;
- :mod:`pipeline.cli`: ``python -m pipeline`` and the ``vnet-lung`` console script;
- :mod:`pipeline.errors`, :mod:`pipeline.files`, :mod:`pipeline.cases`, :mod:`pipeline.export`: one-line errors,
  atomic files, per-case results, atomic model export.

Submodules are imported on first use (``pipeline.device``, ``pipeline.training.engines`` ...), so ``import pipeline``
stays cheap, never imports ``torch_npu`` and changes no global state.
"""

from __future__ import annotations

import importlib

__all__ = ["cases", "cli", "config", "data", "device", "errors", "export", "files", "inference", "preprocess",
           "training"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
