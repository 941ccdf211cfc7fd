"""Training handlers the reference has and MONAI lacks: its FPS, its log line and its run summary.

* :class:`Throughput`: the reference's FPS (samples x processes / iteration time, data loading excluded)
  and the same including data loading, plus the reference's per-iteration log line.
* :class:`ReferenceRunSummary`: the reference's per-run summary ``<CaseName>.log`` (FPS, loss, final error),
  which its launch scripts read.
* :class:`TimeBudget`: a wall-clock limit on training, for recipes that promise a duration.

Metrics are in :mod:`pipeline.training.metrics`, checkpoints in :mod:`pipeline.training.checkpoints`.
"""

from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from pipeline import device as devices
from pipeline.files import atomic_write_text

__all__ = ["RUN_START_ENV", "ReferenceRunSummary", "Throughput", "TimeBudget"]

logger = logging.getLogger(__name__)

#: environment variable holding the run's start (Unix seconds) for :class:`ReferenceRunSummary`
RUN_START_ENV = "VNET_RUN_START"


class Throughput:
    """Samples per second as the reference defines FPS, and the reference's train log line.

    FPS = batch size x processes / (time from the batch being ready to the end of the optimiser step,
    the device synchronised). ``fps_with_data`` also counts the time spent waiting for the loader.

    Each epoch's log line also splits the epoch into time waiting for the data loader and time computing
    (this process's sums, and the longest wait of any process), so a run on several devices shows whether
    its input pipeline keeps up; ``engine.state.metrics`` gets ``data_wait_s`` and ``compute_s``.

    Args:
        world_size: number of training processes (the reference's device count).
        log_interval: log the reference-style line every N iterations (0: never).
        warmup: iterations ignored in the epoch medians (first iterations include allocation and caching).
        loss_file: optional text file receiving one training loss per iteration (the reference's
            ``train_<case>_loss.txt``).
        name: logger name.
    """

    def __init__(
        self,
        world_size: int = 1,
        log_interval: int = 1,
        warmup: int = 2,
        loss_file: str | Path | None = None,
        name: str = "pipeline.throughput",
    ) -> None:
        self.world_size = max(1, int(world_size))
        self.log_interval = log_interval
        self.warmup = warmup
        self.loss_file = Path(loss_file) if loss_file else None
        self.logger = logging.getLogger(name)
        self._t_start = 0.0
        self._t_prev_end: float | None = None
        self._t_get = 0.0
        self.data_wait_s = 0.0
        self.compute_s = 0.0
        self.fps: list[float] = []
        self.fps_with_data: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._get_batch_started)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._get_batch_completed)
        engine.add_event_handler(Events.ITERATION_STARTED, self._iteration_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if self.loss_file is not None:
            self.loss_file.parent.mkdir(parents=True, exist_ok=True)

    def _epoch_started(self, engine: Engine) -> None:
        self.fps, self.fps_with_data = [], []
        self._t_prev_end = None
        self.data_wait_s = self.compute_s = 0.0

    def _get_batch_started(self, engine: Engine) -> None:
        self._t_get = time.perf_counter()
        if self._t_prev_end is None:
            self._t_prev_end = self._t_get

    def _get_batch_completed(self, engine: Engine) -> None:
        self.data_wait_s += time.perf_counter() - self._t_get

    def _iteration_started(self, engine: Engine) -> None:
        self._t_start = time.perf_counter()

    def _iteration_completed(self, engine: Engine) -> None:
        devices.synchronize(torch.device(engine.state.device))
        now = time.perf_counter()
        self.compute_s += now - self._t_start
        batch = _batch_size(engine.state.batch)
        fps = batch * self.world_size / max(now - self._t_start, 1e-9)
        fps_data = batch * self.world_size / max(now - (self._t_prev_end or self._t_start), 1e-9)
        self._t_prev_end = now
        it_in_epoch = (engine.state.iteration - 1) % max(engine.state.epoch_length or 1, 1) + 1
        if it_in_epoch > self.warmup:
            self.fps.append(fps)
            self.fps_with_data.append(fps_data)
        engine.state.metrics["fps"] = fps
        engine.state.metrics["fps_with_data"] = fps_data
        loss = _loss_value(engine.state.output)
        error = _train_error(engine.state.output)
        if self.loss_file is not None and loss is not None:
            with open(self.loss_file, "a") as f:
                f.write(f"{loss:.6f}\n")
        if self.log_interval and it_in_epoch % self.log_interval == 0:
            total = engine.state.epoch_length or it_in_epoch
            lr = _current_lr(engine)
            self.logger.info(
                f"Train Epoch: {engine.state.epoch - 1 + it_in_epoch / total:.2f} [{it_in_epoch}/{total}"
                f" ({100.0 * it_in_epoch / total:.0f}%)] Loss: {loss if loss is not None else float('nan'):.4f}"
                f" Error: {error:.4f}% Lr: {lr:.6f} FPS: {fps:.4f}"
            )

    def _epoch_completed(self, engine: Engine) -> None:
        fps = self.fps or [engine.state.metrics.get("fps", float("nan"))]
        fps_d = self.fps_with_data or [engine.state.metrics.get("fps_with_data", float("nan"))]
        engine.state.metrics["fps_median"] = statistics.median(fps)
        engine.state.metrics["fps_with_data_median"] = statistics.median(fps_d)
        engine.state.metrics["data_wait_s"] = self.data_wait_s
        engine.state.metrics["compute_s"] = self.compute_s
        waits = devices.all_gather_object(self.data_wait_s)  # a collective: every process runs this handler
        busy = self.data_wait_s + self.compute_s
        slowest = f", longest of {len(waits)} processes {max(waits):.2f} s" if waits else ""
        self.logger.info(
            f"Epoch {engine.state.epoch}: median FPS {statistics.median(fps):.3f} samples/s (compute),"
            f" {statistics.median(fps_d):.3f} samples/s (with data loading), peak FPS {max(fps):.3f};"
            f" waiting for data {self.data_wait_s:.2f} s ({100.0 * self.data_wait_s / max(busy, 1e-9):.0f} %"
            f"{slowest}), computing {self.compute_s:.2f} s"
        )


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Mapping):
        img = batch.get("image")
        if isinstance(img, torch.Tensor):
            return int(img.shape[0])
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], Mapping):
        return len(batch)  # MONAI engines decollate the batch into one dict per sample (decollate=True)
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    return 1


def _loss_value(output: Any) -> float | None:
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
        output = output[0]  # decollated: every item carries the batch's loss
    if isinstance(output, Mapping) and "loss" in output:
        loss = output["loss"]
        return float(loss.detach().float().item()) if isinstance(loss, torch.Tensor) else float(loss)
    return None


def _train_error(output: Any) -> float:
    """Per-batch voxel error (%) of the raw training output, the reference's train "Error"."""
    if isinstance(output, (list, tuple)) and output and all(isinstance(o, Mapping) and "pred" in o and "label" in o
                                                            for o in output):
        output = {k: torch.stack([torch.as_tensor(o[k]) for o in output]) for k in ("pred", "label")}  # re-collate
    if not isinstance(output, Mapping) or "pred" not in output or "label" not in output:
        return float("nan")
    pred, label = output["pred"], output["label"]
    if isinstance(pred, (list, tuple)) or isinstance(label, (list, tuple)):
        return float("nan")
    with torch.no_grad():
        p = pred.argmax(1) if pred.shape[1] > 1 else (pred[:, 0] > 0).long()
        y = label[:, 0].long() if label.shape[1] == 1 else label.argmax(1)
        return float((p != y).float().mean().item() * 100.0)


def _current_lr(engine: Engine) -> float:
    opt = getattr(engine, "optimizer", None)
    if opt is None or not opt.param_groups:
        return math.nan
    return float(opt.param_groups[0]["lr"])


class TimeBudget:
    """Stops training after ``limit_s`` seconds of it (from the trainer's start, checked after every iteration);
    the checkpoints of the epochs finished so far stay. ``None`` or 0: no limit. (ignite's ``TimeLimit`` takes
    whole seconds and starts its clock when it is built, before the data are prepared.)"""

    def __init__(self, limit_s: float | None = None) -> None:
        self.limit_s = float(limit_s) if limit_s else None
        self._start = 0.0

    def attach(self, engine: Engine) -> None:
        if self.limit_s:
            engine.add_event_handler(Events.STARTED, self._started)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)

    def _started(self, engine: Engine) -> None:
        self._start = time.perf_counter()

    def _check(self, engine: Engine) -> None:
        if time.perf_counter() - self._start >= self.limit_s:
            logger.info("time budget of %.0f s reached after epoch %d, iteration %d: training stops",
                        self.limit_s, engine.state.epoch, engine.state.iteration)
            engine.terminate()


class ReferenceRunSummary:
    """The reference's run summary ``<CaseName>.log`` (``key = value`` lines), written by rank 0 when training ends.

    The Ascend port's ``test/train_*.sh`` scripts grep their training log for these values; here they come
    from the engines directly. Lines, in the reference's order:

    * ``Network`` (``VNet``), ``RankSize`` (processes), ``BatchSize`` (per process), ``DeviceType``
      (``cpu``/``cuda``/``npu``), ``CaseName``;
    * ``ActualFPS``: the **median** of the per-iteration FPS that :class:`Throughput` puts in
      ``engine.state.metrics["fps"]`` (samples per second over all processes, data loading excluded, the
      first ``warmup`` iterations of each epoch left out); ``PeakFPS``: the maximum, which is what the
      reference reported as its FPS;
    * ``TrainingTime``: as the reference computes it, ``BatchSize`` x 1000 / ``PeakFPS`` (per-process batch over
      the FPS of all processes: an iteration's milliseconds on one process, divided by the process count);
      ``IterationTime``: what an iteration takes, milliseconds at the median FPS;
    * ``FinalValError``: the key metric (voxel error, %) of the last validation (BatchNorm with its running
      statistics). The reference wrote its test error under the name ``TrainAccuracy``; it is neither a training
      value nor an accuracy, hence the name. ``FinalValDice``: the mean Dice of that validation (``nan`` when
      validation never ran); ``FinalValErrorReferenceBN``: with ``reference_batch_norm``, the same error computed
      as the reference does (batches of octants, BatchNorm on each batch's statistics), else ``nan``;
    * ``ActualLoss``: the last training loss (rank 0's batch); ``E2ETrainingTime``: seconds from
      ``start_time`` to the end of training.

    Attach after :class:`Throughput` (it reads the FPS that handler computes in the same event).

    Args:
        path: the summary file, e.g. ``output/0/VNet_bs8_1p_acc.log``.
        case_name: the reference's CaseName, e.g. ``VNet_bs8_1p_acc`` or ``VNet_bs4_8p_perf``.
        batch_size: samples per process per iteration.
        world_size: number of processes.
        device: the training device (its type is logged).
        validator: the evaluator whose last metrics give ``FinalValError`` / ``FinalValDice``.
        reference_validator: the evaluator of the reference's way (``FinalValErrorReferenceBN``), or ``None``.
        warmup: iterations per epoch left out of the median FPS (all are kept if none would remain).
        network_name: the ``Network`` value.
        dice_metric: name of the Dice metric in the validator's metrics.
        start_time: Unix time (s) the run started; default the launcher's ``$VNET_RUN_START`` (the
            reference-style scripts export ``date +%s`` there, so the time includes start-up and data caching),
            else this handler's creation (after the training data were cached).
    """

    def __init__(
        self,
        path: str | Path,
        case_name: str,
        batch_size: int,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        validator: Engine | None = None,
        reference_validator: Engine | None = None,
        warmup: int = 2,
        network_name: str = "VNet",
        dice_metric: str = "val_mean_dice",
        start_time: float | None = None,
    ) -> None:
        self.path = Path(path)
        self.case_name = case_name
        self.batch_size = int(batch_size)
        self.world_size = max(1, int(world_size))
        self.device_type = torch.device(device).type
        self.validator = validator
        self.reference_validator = reference_validator
        self.warmup = max(0, int(warmup))
        self.network_name = network_name
        self.dice_metric = dice_metric
        if start_time is None and os.environ.get(RUN_START_ENV, "").strip():
            try:
                start_time = float(os.environ[RUN_START_ENV])
            except ValueError:
                raise ValueError(f"{RUN_START_ENV}={os.environ[RUN_START_ENV]!r}: expected Unix seconds") from None
        self.start_time = time.time() if start_time is None else float(start_time)
        self.fps_all: list[float] = []
        self.fps_steady: list[float] = []
        self.last_loss = math.nan

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def _iteration_completed(self, engine: Engine) -> None:
        loss = _loss_value(engine.state.output)
        if loss is not None:
            self.last_loss = loss
        fps = engine.state.metrics.get("fps")
        if fps is None:
            return
        self.fps_all.append(float(fps))
        it_in_epoch = (engine.state.iteration - 1) % max(engine.state.epoch_length or 1, 1) + 1
        if it_in_epoch > self.warmup:
            self.fps_steady.append(float(fps))

    @staticmethod
    def _key_metric(validator: Engine | None) -> float:
        state = getattr(validator, "state", None)
        metrics = getattr(state, "metrics", None) or {}
        key = getattr(state, "key_metric_name", None)
        return float(metrics.get(key, math.nan)) if key else math.nan

    def _dice(self) -> float:
        metrics = getattr(getattr(self.validator, "state", None), "metrics", None) or {}
        return float(metrics.get(self.dice_metric, math.nan))

    def summary(self) -> dict[str, str]:
        """The summary lines as an ordered ``{key: value}`` mapping (values already formatted)."""
        fps_values = self.fps_steady or self.fps_all
        fps = statistics.median(fps_values) if fps_values else math.nan
        peak = max(self.fps_all) if self.fps_all else math.nan
        ms_per_iteration = 1000.0 * self.batch_size * self.world_size / fps if fps > 0 else math.nan
        reference_time = 1000.0 * self.batch_size / peak if peak > 0 else math.nan
        return {
            "Network": self.network_name,
            "RankSize": str(self.world_size),
            "BatchSize": str(self.batch_size),
            "DeviceType": self.device_type,
            "CaseName": self.case_name,
            "ActualFPS": f"{fps:.4f}",
            "PeakFPS": f"{peak:.4f}",
            "TrainingTime": f"{reference_time:.2f}",
            "IterationTime": f"{ms_per_iteration:.2f}",
            "FinalValError": f"{self._key_metric(self.validator):.4f}",
            "FinalValDice": f"{self._dice():.4f}",
            "FinalValErrorReferenceBN": f"{self._key_metric(self.reference_validator):.4f}",
            "ActualLoss": f"{self.last_loss:.6f}",
            "E2ETrainingTime": str(int(round(time.time() - self.start_time))),
        }

    def write(self, engine: Engine | None = None) -> None:
        """Write the summary atomically (rank 0 only)."""
        if not devices.is_main_process():
            return
        lines = "".join(f"{k} = {v}\n" for k, v in self.summary().items())
        atomic_write_text(self.path, lines)
        logger.info(f"run summary written to {self.path}:\n{lines.rstrip()}")
