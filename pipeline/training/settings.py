"""Fail fast, in one line, on run settings that would otherwise fail deep inside ignite or after an epoch."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from transforms.errors import InputError

__all__ = ["COUNTS", "FLAGS", "check_run_settings"]

#: settings that are counts: at least 1, except the ones from ``num_workers`` on, which may be 0
COUNTS = ("epochs", "batch_size", "val_interval", "num_workers", "cache_workers", "max_bad_cases")

#: settings that are switches. A bundle override ``--amp false`` arrives as the string "false", which Python
#: treats as true, so switches must be real booleans (``True``/``False`` on the command line)
FLAGS = ("amp", "reference_grid", "reference_batch_norm", "load_pretrain")


def check_run_settings(ckpt_dir: str | Path, **settings: Any) -> None:
    """Fail fast, in one line, on settings that would otherwise fail deep inside ignite or after an epoch.

    Args:
        ckpt_dir: the checkpoint folder; created if needed and must be writable.
        **settings: name -> value of the numeric hyperparameters, e.g. ``epochs=200, batch_size=4,
            learning_rate=1e-3``. Counts (``epochs``, ``batch_size``, ``val_interval``, ``num_workers``) must be
            integers (>= 0 for workers, >= 1 otherwise), switches (:data:`FLAGS`) booleans, rates
            (``learning_rate``, ``weight_decay``, ``lr_decay``) non-negative numbers.

    Raises:
        InputError: naming the setting (as a bundle override ``--name``) and the value received.
    """
    for name, value in settings.items():
        if name in FLAGS:
            if not isinstance(value, bool):
                raise InputError(f"--{name} must be True or False, got {value!r} ({type(value).__name__}); "
                                 "on the command line write True or False with a capital letter")
        elif name in COUNTS:
            minimum = 0 if name in COUNTS[3:] else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise InputError(f"--{name} must be a whole number >= {minimum}, got {value!r} "
                                 f"({type(value).__name__})")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
            raise InputError(f"--{name} must be a non-negative number, got {value!r} ({type(value).__name__})")
    folder = Path(ckpt_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"checkpoint folder '{folder}' is not writable ({e.strerror or e}); pass --bundle_root or "
                         "--ckpt_dir to a folder you can write") from e
