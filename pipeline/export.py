"""``python -m pipeline export ...``: MONAI's ``ckpt_export`` / ``onnx_export``, and the reference's checkpoint format.

MONAI writes the exported file directly under its final name, so a kill during the (slow) export leaves a truncated
``model.ts``. This command runs the same MONAI command into a temporary name in the target's folder and renames it
into place only when it succeeded. Arguments are MONAI's, e.g.::

    python -m pipeline export ckpt_export network_def --filepath bundle/models/model.ts \\
        --ckpt_file bundle/models/model.pt --meta_file bundle/configs/metadata.json \\
        --config_file bundle/configs/inference.json --bundle_root bundle

``--ckpt_file`` may also be one of our full checkpoints or the reference's (``vnet_model_best.pth.tar``): its weights
are handed to MONAI as a plain state dict. ``export reference`` writes our weights in the reference's format
(``{"epoch", "state_dict", "error"}``) for its ``eval.py`` and ``--resume``::

    python -m pipeline export reference --ckpt_file bundle/models/vnet_model_best.pth.tar \\
        --filepath vnet_model_best.pth.tar [--data-parallel]
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from transforms.errors import InputError

__all__ = ["COMMANDS", "MONAI_COMMANDS", "export", "export_reference"]

MONAI_COMMANDS = ("ckpt_export", "onnx_export")
COMMANDS = (*MONAI_COMMANDS, "reference")


def _option(args: list[str], name: str, example: str) -> int:
    """Index of ``name``'s value in ``args``."""
    try:
        i = args.index(name)
        args[i + 1]  # noqa: B018 - the value must be there
        return i + 1
    except (ValueError, IndexError):
        raise InputError(f"export needs {name} <file> (e.g. {example})") from None


@contextlib.contextmanager
def _plain_weights(path: str) -> Iterator[str]:
    """``path``, or a temporary plain state dict of its weights for a full checkpoint (ours or the reference's)."""
    import torch

    from pipeline.files import load_checkpoint, state_dict_from_checkpoint

    checkpoint = load_checkpoint(path)
    state = state_dict_from_checkpoint(checkpoint, path)
    if isinstance(checkpoint, dict) and list(state) == list(checkpoint):  # already a plain state dict: as it is
        yield path
        return
    fd, tmp = tempfile.mkstemp(prefix=".weights.", suffix=".pt", dir=Path(path).parent)
    os.close(fd)
    try:
        torch.save(state, tmp)  # a temporary file already: no atomic rename needed
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def export(command: str, args: list[str]) -> Path:
    """Run ``python -m monai.bundle <command> <args>`` into a temporary file, then rename it to ``--filepath``.

    For ``reference``: ``--ckpt_file FILE --filepath FILE [--data-parallel]`` (:func:`export_reference`).

    Raises:
        InputError: unknown command, no ``--filepath``, or the MONAI command failed (its last line is quoted).
    """
    if command not in COMMANDS:
        raise InputError(f"export command must be one of {', '.join(COMMANDS)}, got {command!r}")
    args = list(args)
    if command == "reference":
        return _export_reference_args(args)
    i = _option(args, "--filepath", "bundle/models/model.ts")
    target = Path(args[i])
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = target.suffix or ".ts"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    args[i] = tmp
    ckpt = args.index("--ckpt_file") + 1 if "--ckpt_file" in args[:-1] else None
    try:
        with _plain_weights(args[ckpt]) if ckpt is not None else contextlib.nullcontext(None) as weights:
            if ckpt is not None:
                args[ckpt] = weights
            proc = subprocess.run([sys.executable, "-m", "monai.bundle", command, *args], capture_output=True,
                                  text=True)
        if proc.returncode != 0 or os.path.getsize(tmp) == 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise InputError(f"{command} failed: {lines[-1] if lines else 'no output'}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return target


def _export_reference_args(args: list[str]) -> Path:
    data_parallel = "--data-parallel" in args
    args = [a for a in args if a != "--data-parallel"]
    source = args[_option(args, "--ckpt_file", "bundle/models/vnet_model_best.pth.tar")]
    target = args[_option(args, "--filepath", "vnet_model_best.pth.tar")]
    unknown = [a for a in args if a.startswith("--") and a not in ("--ckpt_file", "--filepath")]
    if unknown:
        raise InputError(f"export reference: unknown option {unknown[0]} (expected --ckpt_file, --filepath, "
                         "--data-parallel)")
    return export_reference(source, target, data_parallel)


def export_reference(source: str | os.PathLike, target: str | os.PathLike, data_parallel: bool = False) -> Path:
    """Write the weights of ``source`` in the reference's checkpoint format to ``target``, atomically.

    ``source`` is ``model.pt``, one of our full checkpoints (its epoch and best validation error are carried over)
    or already a reference checkpoint.

    Args:
        source: the checkpoint to read.
        target: the file to write (e.g. ``vnet_model_best.pth.tar``).
        data_parallel: prefix the keys with ``module.`` (the original PyTorch V-Net saved its DataParallel model;
            the Ascend port saves them without).
    """
    from pipeline.files import atomic_torch_save, load_checkpoint, reference_checkpoint, state_dict_from_checkpoint

    checkpoint = load_checkpoint(source)
    state = state_dict_from_checkpoint(checkpoint, source)
    epoch, error = 0, math.nan
    if isinstance(checkpoint, dict):
        epoch = int(checkpoint.get("trainer", {}).get("epoch", checkpoint.get("epoch", 0)) or 0)
        best = checkpoint.get("evaluator", {}).get("best_metric", checkpoint.get("error", math.nan))
        error = float(best) if best is not None else math.nan
    return atomic_torch_save(reference_checkpoint(state, epoch, error, data_parallel), target)
