"""Host random-number states (torch, numpy, Python) in checkpoints, so that a resumed run continues bitwise.

A multi-process checkpoint holds every rank's states under :data:`RNG_PER_RANK_KEY`
(:class:`pipeline.training.checkpoints.LatestCheckpoint`); each rank restores its own
(:meth:`pipeline.training.engines.SupervisedTrainer.load_state_dict`).
"""

from __future__ import annotations

import ast
import random
from typing import Any

import numpy as np
import torch

__all__ = ["RNG_PER_RANK_KEY", "rng_state", "set_rng_state"]

#: key of the trainer state that holds every rank's RNG states in a multi-process checkpoint
RNG_PER_RANK_KEY = "rng_per_rank"


def rng_state() -> dict[str, Any]:
    """The host RNG states (torch, numpy, Python) in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), *map(float, np_state[2:])],
        "python": repr(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    random.setstate(ast.literal_eval(state["python"]))
