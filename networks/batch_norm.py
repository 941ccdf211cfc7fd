"""Evaluation with batch statistics, as the reference's ``ContBatchNorm3d`` always normalises.

The reference's batch norm uses the statistics of the batch it is given also at test time, so its test error depends on
the test batch (docs/reference.md). Our networks are standard: running statistics in ``eval()``. This context gives the
reference's behaviour on demand, for comparing with its numbers; PyTorch's ``BatchNorm`` does it when it is in training
mode without running-statistics tracking, so nothing else is needed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["batch_statistics"]


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Within the context every BatchNorm of ``model`` normalises with the statistics of its input batch.

    Running statistics are neither used nor updated, and every other module (dropout included) keeps its mode, so
    ``model.eval()`` plus this context is the reference's test-time network. The modes are restored on exit.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.track_running_stats) for m in norms]
    try:
        for m in norms:
            m.training, m.track_running_stats = True, False
        yield model
    finally:
        for m, (training, tracking) in zip(norms, saved):
            m.training, m.track_running_stats = training, tracking
