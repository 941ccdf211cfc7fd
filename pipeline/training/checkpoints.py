"""Checkpoints: the reference's ``vnet_checkpoint.pth.tar`` / ``vnet_model_best.pth.tar`` and the bundle's ``model.pt``.

All written atomically by rank 0 (:func:`pipeline.files.atomic_torch_save`); :func:`resume_path` decides what a
run resumes from. :class:`WeightsLoader` and :class:`ResumeLoader` also read the reference's checkpoints (its
``state_dict``, with or without DataParallel's ``module.`` prefix), which MONAI's ``CheckpointLoader`` cannot.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from pipeline import device as devices
from pipeline.files import (
    atomic_torch_save,
    is_reference_checkpoint,
    load_checkpoint,
    state_dict_from_checkpoint,
    unwrap_state_dict,
)
from pipeline.training.engines import SupervisedTrainer
from pipeline.training.rng import RNG_PER_RANK_KEY, rng_state
from transforms.errors import InputError

__all__ = ["BestCheckpoint", "LatestCheckpoint", "ResumeLoader", "WeightsLoader", "resume_path"]

logger = logging.getLogger(__name__)


def _rng_of_every_rank() -> list[dict[str, Any]] | None:
    """Each rank's host RNG states, gathered on every rank (a collective); ``None`` with one process.

    Without this a resumed multi-process run would give every rank the RNG of rank 0, whose checkpoint
    it is: dropout and random augmentations would then repeat across ranks.
    """
    return devices.all_gather_object(rng_state())


def _states(save_dict: Mapping[str, Any], rng_per_rank: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out = {}
    for key, obj in save_dict.items():
        if obj is None:
            continue
        out[key] = unwrap_state_dict(obj) if isinstance(obj, torch.nn.Module) else obj.state_dict()
        if rng_per_rank is not None and isinstance(obj, SupervisedTrainer):
            out[key][RNG_PER_RANK_KEY] = rng_per_rank
    return out


class LatestCheckpoint:
    """Write the full training state every ``interval`` epochs (rank 0 only), atomically.

    MONAI's ``CheckpointSaver`` (through ignite's ``Checkpoint``) deletes the previous file before it
    writes the next one under the same name, so a kill in between leaves no checkpoint at all; this
    handler renames the new file over the old one instead.

    Args:
        save_dir: folder (the reference's ``--save``).
        save_dict: name -> object with ``state_dict()`` (network, optimizer, lr_scheduler, trainer,
            evaluator ...). Modules are saved without DDP's ``module.`` prefix.
        filename: the reference's ``vnet_checkpoint.pth.tar``.
        interval: epochs between saves.
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: Mapping[str, Any],
        filename: str = "vnet_checkpoint.pth.tar",
        interval: int = 1,
    ) -> None:
        self.save_dir = Path(save_dir)
        self.save_dict = dict(save_dict)
        self.filename = filename
        self.interval = max(1, int(interval))

    @property
    def path(self) -> Path:
        return self.save_dir / self.filename

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self._save_final)

    def _save_final(self, engine: Engine) -> None:
        if engine.state.epoch % self.interval:  # the last epoch was not saved by the interval
            self.save(engine)

    def save(self, engine: Engine | None = None) -> None:
        rng_per_rank = _rng_of_every_rank()  # every rank takes part
        if not devices.is_main_process():
            return
        atomic_torch_save(_states(self.save_dict, rng_per_rank), self.path)
        logger.info(f"saved checkpoint {self.path}")


class BestCheckpoint:
    """After each validation, save the weights if the key metric improved (rank 0 only), atomically.

    Writes ``model.pt`` (the plain network state dict MONAI tools expect: ``ckpt_export``,
    ``CheckpointLoader``) and the reference's full ``vnet_model_best.pth.tar``.

    Args:
        save_dir: folder for both files.
        network: the trained network (DDP-wrapped or not).
        save_dict: full state for the reference-style best checkpoint (``None``: weights only).
        model_filename: plain state dict file name.
        best_filename: full-state file name (``None`` to skip).
    """

    def __init__(
        self,
        save_dir: str | Path,
        network: torch.nn.Module,
        save_dict: Mapping[str, Any] | None = None,
        model_filename: str = "model.pt",
        best_filename: str | None = "vnet_model_best.pth.tar",
    ) -> None:
        self.save_dir = Path(save_dir)
        self.network = network
        self.save_dict = dict(save_dict) if save_dict else None
        self.model_filename = model_filename
        self.best_filename = best_filename

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._maybe_save)

    def _maybe_save(self, engine: Engine) -> None:
        if engine.state.best_metric_epoch != engine.state.epoch:  # the same on every rank (gathered metric)
            return
        rng_per_rank = _rng_of_every_rank() if self.best_filename and self.save_dict else None
        if not devices.is_main_process():
            return
        atomic_torch_save(unwrap_state_dict(self.network), self.save_dir / self.model_filename)
        if self.best_filename and self.save_dict:
            atomic_torch_save(_states(self.save_dict, rng_per_rank), self.save_dir / self.best_filename)
        logger.info(
            f"new best {engine.state.key_metric_name} = {engine.state.best_metric:.4f} at epoch"
            f" {engine.state.epoch}: saved {self.save_dir / self.model_filename}"
        )


def resume_path(resume: bool | str, checkpoint: str | Path) -> str | None:
    """Which checkpoint to resume from: the bundle's ``resume`` option.

    Args:
        resume: ``False`` (start fresh), ``True`` (the checkpoint must exist) or ``"auto"`` (resume if it
            exists: what a job restarted by ``torchrun --max-restarts`` or a scheduler wants).
        checkpoint: the latest full checkpoint (``models/vnet_checkpoint.pth.tar``).

    Raises:
        InputError: ``resume=True`` and there is no checkpoint, or an unknown value.
    """
    if isinstance(resume, str):
        value = resume.strip().lower()
        if value in ("true", "1", "yes"):
            resume = True
        elif value in ("false", "0", "no", ""):
            resume = False
        elif value != "auto":
            raise InputError(f"resume must be true, false or 'auto', got {resume!r}")
    if resume is False or resume is None:
        return None
    exists = Path(checkpoint).is_file()
    if resume == "auto":
        return str(checkpoint) if exists else None
    if not exists:
        raise InputError(f"cannot resume: no checkpoint at '{checkpoint}' (train once without --resume, or point"
                         " --resume_ckpt at a vnet_checkpoint.pth.tar)")
    return str(checkpoint)


class WeightsLoader:
    """Load a network's weights when the engine starts: ``model.pt``, one of our full checkpoints (its ``model``) or
    the reference's (its ``state_dict``, ``module.`` prefixes removed). Strict: every key must fit.

    Usable as an engine handler (``attach``) or called with the engine, like MONAI's ``CheckpointLoader``.

    Args:
        load_path: the checkpoint file.
        network: the network (DDP-wrapped or not).
        map_location: where the tensors are loaded.
    """

    def __init__(self, load_path: str | Path, network: torch.nn.Module, map_location: Any = "cpu") -> None:
        self.load_path = Path(load_path)
        self.network = network
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        checkpoint = load_checkpoint(self.load_path, map_location=self.map_location)
        state = state_dict_from_checkpoint(checkpoint, self.load_path)
        getattr(self.network, "module", self.network).load_state_dict(state, strict=True)
        kind = "the reference's checkpoint" if is_reference_checkpoint(checkpoint) else "checkpoint"
        logger.info(f"loaded the weights of {kind} {self.load_path}")


class ResumeLoader:
    """Resume training from a checkpoint when the trainer starts.

    One of ours restores every state (network, optimizer, scheduler, trainer, evaluator) through ignite, as MONAI's
    ``CheckpointLoader``; the reference's holds weights only (its optimizer and schedule are apex's and a
    ``DataParallel``'s): those are loaded and training starts from epoch 1 with them, which the log says.

    Args:
        load_path: the checkpoint file.
        load_dict: name -> object to restore (``model`` is the network).
        map_location: where the tensors are loaded.
    """

    def __init__(self, load_path: str | Path, load_dict: Mapping[str, Any], map_location: Any = "cpu") -> None:
        self.load_path = Path(load_path)
        self.load_dict = dict(load_dict)
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        from monai.handlers import CheckpointLoader

        try:  # memory-mapped: only the top-level keys are looked at here, no tensor is read
            head = load_checkpoint(self.load_path, map_location="cpu", mmap=True)
        except InputError:  # files of torch < 1.6 (the reference's first port) cannot be memory-mapped
            head = load_checkpoint(self.load_path, map_location="cpu")
        if is_reference_checkpoint(head):
            WeightsLoader(self.load_path, self.load_dict["model"], self.map_location)()
            logger.warning(f"{self.load_path} is the reference's checkpoint: its weights were loaded; optimizer, "
                           "schedule and epoch count start fresh (it holds none of ours)")
            return
        # ours: every state, and a larger --epochs than the checkpoint's is kept (MONAI's handler does both)
        CheckpointLoader(str(self.load_path), self.load_dict, map_location=self.map_location)(engine)
