"""Atomic file writing and safe checkpoint loading.

Every file the project writes (checkpoints, ``model.pt``, exported models, CSVs, PNGs) goes to a
temporary name in the target's folder and is renamed into place, so a kill at any moment leaves
either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from transforms.errors import InputError

__all__ = ["REFERENCE_CHECKPOINT_KEYS", "atomic_path", "atomic_torch_save", "atomic_write_text",
           "is_reference_checkpoint", "load_checkpoint", "reference_checkpoint", "state_dict_from_checkpoint",
           "unwrap_state_dict"]

#: what the reference's ``vnet_checkpoint.pth.tar`` / ``vnet_model_best.pth.tar`` hold (the Ascend port: ``error`` is
#: its best test error so far; the original PyTorch V-Net wrote ``best_prec1`` and DataParallel's ``module.`` prefixes)
REFERENCE_CHECKPOINT_KEYS = ("epoch", "state_dict", "error")
DATA_PARALLEL_PREFIX = "module."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    Args:
        path: the final file name.
        suffix: suffix of the temporary name (default: the final suffix, so writers that look at the
            extension behave the same).

    Raises:
        InputError: the folder cannot be created or written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = suffix if suffix is not None else "".join(path.suffixes)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as e:
        raise InputError(f"cannot write '{path}': {e.strerror or e}") from e
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the final file the usual permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary name, fsync, then rename into place. Returns the path."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically. Returns the path."""
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        tmp.write_text(text)
    return path


def unwrap_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of a module, without the ``module.`` prefix of DDP / DataParallel wrappers."""
    inner = getattr(module, "module", module)
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile wrapper
    return inner.state_dict()


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors and plain containers only.

    A file whose pickle would construct arbitrary Python objects (and could run code) is refused.

    Raises:
        InputError: the file is missing, truncated, not a torch checkpoint, or not weights-only.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap or None)
    except pickle.UnpicklingError as e:
        text = str(e)
        unsafe = [ln.strip() for ln in text.splitlines() if "GLOBAL" in ln or "global" in ln.split(":")[0]]
        if not unsafe:
            raise InputError(f"checkpoint '{path}' cannot be read safely: it is corrupt, truncated, or a pickle that is"
                             " not a torch weights file") from e
        raise InputError(
            f"checkpoint '{path}' was refused: it is not a plain weights file and loading it could run code"
            f" ({unsafe[0][:200]}). Only load checkpoints from sources you trust, and re-save them as state dicts."
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0][:200]
        raise InputError(f"checkpoint '{path}' cannot be read (truncated or not a torch file): {reason}") from e


def state_dict_from_checkpoint(checkpoint: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network weights in a loaded checkpoint, without ``module.`` / ``_orig_mod.`` prefixes.

    Accepts a plain state dict (``model.pt``) or a dict holding one under ``model`` (our full checkpoints, MONAI's
    ``CheckpointSaver``), ``network`` or ``state_dict`` (the reference's ``vnet_*.pth.tar``).

    Raises:
        InputError: no state dict (parameter name -> tensor) in it; the message names ``path``.
    """
    if isinstance(checkpoint, dict):
        for key in ("model", "network", "state_dict"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise InputError(f"model '{path}' holds no state dict (expected parameter name -> tensor, or {{'model': ...}})")
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in checkpoint.items()}


def is_reference_checkpoint(checkpoint: object) -> bool:
    """Whether a loaded checkpoint is the reference's (weights under ``state_dict``), not one of ours."""
    return isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict) and "model" not in checkpoint


def reference_checkpoint(state_dict: dict[str, torch.Tensor], epoch: int = 0, error: float = float("nan"),
                         data_parallel: bool = False) -> dict[str, Any]:
    """Weights in the reference's checkpoint format, for its ``eval.py`` / ``--resume``.

    Args:
        state_dict: our network's weights (the key names are the reference's).
        epoch: the epoch the weights come from.
        error: their test error (%), the reference's ``error`` entry.
        data_parallel: prefix every key with ``module.``, as the original PyTorch V-Net saved its DataParallel model.
    """
    prefix = DATA_PARALLEL_PREFIX if data_parallel else ""
    return {"epoch": int(epoch), "state_dict": {prefix + k: v for k, v in state_dict.items()}, "error": float(error)}
