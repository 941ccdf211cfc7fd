"""Training and evaluation on MONAI's ignite engines.

- :mod:`~pipeline.training.engines`: ``SupervisedTrainer`` / ``SupervisedEvaluator`` with AMP on any device;
- :mod:`~pipeline.training.losses`: the reference's weighted cross-entropy and class weights, MONAI's Dice losses;
- :mod:`~pipeline.training.metrics`: the reference's voxel error rate, per-case metrics;
- :mod:`~pipeline.training.handlers`: the reference's FPS, log line and run summary;
- :mod:`~pipeline.training.checkpoints`: the reference's checkpoint files and ``model.pt``, written atomically;
- :mod:`~pipeline.training.rng`: random-number states in checkpoints;
- :mod:`~pipeline.training.settings`: run settings checked before anything starts;
- :mod:`~pipeline.training.evaluation`: the per-case CSV of ``evaluate.json``.

Modules are imported on first use (``pipeline.training.engines`` in a bundle config imports just that one).
"""

from __future__ import annotations

import importlib

__all__ = ["checkpoints", "engines", "evaluation", "handlers", "losses", "metrics", "rng", "settings"]


def __getattr__(name: str):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
