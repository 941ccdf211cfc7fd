"""MONAI's ``SupervisedTrainer`` / ``SupervisedEvaluator`` made device-generic (CPU, CUDA, Ascend NPU).

MONAI 1.6.1 hard-codes CUDA in exactly two places of these engines: ``Trainer.run()`` builds
``torch.cuda.amp.GradScaler()`` and both ``_iteration`` methods enter ``torch.autocast("cuda")``.
Off CUDA both disable themselves with a warning, so ``amp=True`` silently trains in fp32 on a CPU or
an NPU. The subclasses here replace exactly that and nothing more:

* the GradScaler comes from :func:`pipeline.device.grad_scaler` for the engine's device type (and is
  ``None`` for bfloat16, which needs no loss scaling); it is built once, so a checkpoint can hold it;
* the AMP forward runs under ``torch.autocast(device.type, dtype)``; with ``amp=False`` MONAI's own
  ``_iteration`` runs unchanged.

Two small additions make long runs safe: the trainer stops on a non-finite loss before the optimiser
step (naming the iteration and the case ids in the batch), and both engines put their extra state
(GradScaler, RNG states, best metric) into ``state_dict()`` so one checkpoint resumes a run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.engines import SupervisedEvaluator as _MonaiSupervisedEvaluator
from monai.engines import SupervisedTrainer as _MonaiSupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.engines.workflow import Workflow
from monai.inferers import Inferer, SimpleInferer
from monai.utils.enums import CommonKeys as Keys

from networks.batch_norm import batch_statistics
from pipeline import device as devices
from pipeline.training.rng import RNG_PER_RANK_KEY, rng_state, set_rng_state

__all__ = ["BatchStatisticsInferer", "NonFiniteLossError", "SupervisedEvaluator", "SupervisedTrainer", "batch_case_ids"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or Inf; training stops instead of training on."""


def batch_case_ids(batch: Any, max_ids: int = 16) -> list[str]:
    """Case ids (``uid`` key, else the image file names) of a collated batch, for error messages."""
    if isinstance(batch, dict):
        if "uid" in batch:
            uids = batch["uid"]
            return [str(u) for u in (uids if isinstance(uids, (list, tuple)) else [uids])][:max_ids]
        image = batch.get(Keys.IMAGE)
        meta = getattr(image, "meta", None) or {}
        names = meta.get("filename_or_obj")
        if names is not None:
            return [str(n) for n in (names if isinstance(names, (list, tuple)) else [names])][:max_ids]
    return []


def _unpack_batch(engine: Workflow, batchdata: Any) -> tuple[Any, Any, Sequence, dict]:
    """MONAI's batch preparation at the start of both engines' ``_iteration``: (inputs, targets, args, kwargs) on the
    engine's device; ``engine.state.output`` starts as ``{image, label}``."""
    if batchdata is None:
        raise ValueError("Must provide batch data for current iteration.")
    batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
    inputs, targets, args, kwargs = batch if len(batch) == 4 else (*batch, (), {})
    engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
    return inputs, targets, args, kwargs


class SupervisedTrainer(_MonaiSupervisedTrainer):
    """``monai.engines.SupervisedTrainer`` with AMP on any device type and a NaN/Inf guard.

    Args:
        *args: as for ``monai.engines.SupervisedTrainer``.
        amp: mixed precision on the engine's device (CPU: bfloat16; CUDA/NPU: float16 unless
            ``amp_dtype`` says otherwise).
        amp_dtype: ``torch.float16``/``torch.bfloat16`` (or ``"fp16"``/``"bf16"``); ``None`` picks the
            device's default (:func:`pipeline.device.amp_dtype`).
        loss_scale: ``"dynamic"`` or a static scale (the reference's ``--loss-scale 128``); float16 only.
        stop_on_nonfinite_loss: raise :class:`NonFiniteLossError` when the loss is NaN/Inf and no
            GradScaler is there to skip the step.
        **kwargs: as for ``monai.engines.SupervisedTrainer`` (``amp_kwargs`` is replaced).
    """

    def __init__(
        self,
        *args: Any,
        amp: bool = False,
        amp_dtype: torch.dtype | str | None = None,
        loss_scale: float | str = "dynamic",
        stop_on_nonfinite_loss: bool = True,
        **kwargs: Any,
    ) -> None:
        kwargs.pop("amp_kwargs", None)
        super().__init__(*args, amp=amp, **kwargs)
        dev = torch.device(self.state.device)
        self.amp_dtype = devices.amp_dtype(dev, amp_dtype) if amp else None
        self.amp_kwargs = {"dtype": self.amp_dtype} if amp else {}
        # Built once (MONAI rebuilds a CUDA-only scaler in every run()), so checkpoints can hold it.
        self.scaler = devices.grad_scaler(dev, enabled=amp, dtype=self.amp_dtype, loss_scale=loss_scale)
        self.stop_on_nonfinite_loss = stop_on_nonfinite_loss
        self._current_batch: Any = None
        self.add_event_handler(IterationEvents.LOSS_COMPLETED, self._check_loss)

    def run(self) -> None:  # type: ignore[override]
        """Run training; unlike ``monai.engines.Trainer.run`` this keeps the device-generic scaler."""
        Workflow.run(self)

    # -- checkpointable extras --------------------------------------------------------------------
    def state_dict(self) -> Any:
        """Ignite's engine state plus the GradScaler and this process's host RNG states.

        Multi-process checkpoints (:class:`pipeline.training.checkpoints.LatestCheckpoint`) add every rank's RNG states
        under ``RNG_PER_RANK_KEY``; :meth:`load_state_dict` gives each rank its own back.
        """
        state = super().state_dict()
        state["scaler"] = self.scaler.state_dict() if self.scaler is not None else {}
        state["rng"] = rng_state()
        return state

    def load_state_dict(self, state_dict: Any) -> None:
        state_dict = dict(state_dict)
        scaler_state = state_dict.pop("scaler", None)
        rng = state_dict.pop("rng", None)
        per_rank = state_dict.pop(RNG_PER_RANK_KEY, None)  # written by multi-process runs
        super().load_state_dict(state_dict)
        if scaler_state and self.scaler is not None:
            self.scaler.load_state_dict(scaler_state)
        if per_rank and len(per_rank) == devices.get_world_size():
            rng = per_rank[devices.get_rank()]
        elif per_rank:
            logger.warning(f"the checkpoint holds the RNG states of {len(per_rank)} processes, this run has "
                           f"{devices.get_world_size()}: every process restores rank 0's")
        if rng:
            set_rng_state(rng)

    # -- the iteration ----------------------------------------------------------------------------
    def _check_loss(self, engine: SupervisedTrainer) -> None:
        loss = engine.state.output[Keys.LOSS]
        if not self.stop_on_nonfinite_loss or self.scaler is not None:
            return  # a GradScaler skips steps whose gradients are not finite
        if not torch.isfinite(loss.detach()).all():
            ids = batch_case_ids(self._current_batch)
            raise NonFiniteLossError(
                f"training loss is {loss.item()} at epoch {engine.state.epoch}, iteration {engine.state.iteration}"
                f" (cases in the batch: {', '.join(ids) if ids else 'unknown'}); stopping before the optimiser step."
                " Resume from the last checkpoint after checking those cases and the learning rate."
            )

    def _iteration(self, engine: SupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        self._current_batch = batchdata
        if not engine.amp:
            return super()._iteration(engine, batchdata)
        return self._amp_iteration(engine, batchdata)

    def _amp_iteration(self, engine: SupervisedTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        # MONAI's AMP branch of SupervisedTrainer._iteration with torch.autocast(<device type>) instead of
        # torch.autocast("cuda"), and an optional scaler (None for bfloat16).
        inputs, targets, args, kwargs = _unpack_batch(engine, batchdata)
        acc = engine.accumulation_steps
        local_iter = (engine.state.iteration - 1) % (engine.state.epoch_length or 1 << 62)
        should_zero_grad = acc <= 1 or local_iter % acc == 0
        should_step = acc <= 1 or (local_iter + 1) % acc == 0 or (local_iter + 1) == engine.state.epoch_length

        engine.network.train()
        if should_zero_grad:
            engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with devices.autocast(torch.device(engine.state.device), enabled=True, dtype=self.amp_dtype):
            engine.state.output[Keys.PRED] = engine.inferer(inputs, engine.network, *args, **kwargs)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            engine.state.output[Keys.LOSS] = engine.loss_function(engine.state.output[Keys.PRED], targets).mean()
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss = engine.state.output[Keys.LOSS]
        loss = loss / acc if acc > 1 else loss
        if engine.scaler is not None:
            engine.scaler.scale(loss).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.scaler.step(engine.optimizer)
                engine.scaler.update()
        else:
            loss.backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            if should_step:
                engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class SupervisedEvaluator(_MonaiSupervisedEvaluator):
    """``monai.engines.SupervisedEvaluator`` with AMP on any device type and a resumable best metric.

    Args:
        *args: as for ``monai.engines.SupervisedEvaluator``.
        amp: autocast the inferer on the engine's device type.
        amp_dtype: as for :class:`SupervisedTrainer`.
        metric_cmp_fn: ``"lower"`` (for error rates) / ``"higher"`` or a callable ``(current, best) -> bool``.
        **kwargs: as for ``monai.engines.SupervisedEvaluator``.
    """

    def __init__(
        self,
        *args: Any,
        amp: bool = False,
        amp_dtype: torch.dtype | str | None = None,
        metric_cmp_fn: str | Callable = "higher",
        **kwargs: Any,
    ) -> None:
        kwargs.pop("amp_kwargs", None)
        if metric_cmp_fn == "lower":
            metric_cmp_fn = _lower_is_better
        elif metric_cmp_fn == "higher":
            metric_cmp_fn = _higher_is_better
        super().__init__(*args, amp=amp, metric_cmp_fn=metric_cmp_fn, **kwargs)
        self.amp_dtype = devices.amp_dtype(torch.device(self.state.device), amp_dtype) if amp else None
        self.amp_kwargs = {"dtype": self.amp_dtype} if amp else {}
        # the best metric and its epoch survive a resume (CheckpointLoader restores this engine's state)
        self.state_dict_user_keys.extend(["best_metric", "best_metric_epoch"])

    def load_state_dict(self, state_dict: Any) -> None:
        """Restore the counters and the best-metric record, but not the epoch length.

        The number of validation iterations is this process's shard of the validation data; the checkpoint
        holds rank 0's (with 3 cases on 2 processes, rank 1 would run 2 iterations over its 1 case, counting
        it twice and drawing from the RNG what an uninterrupted run does not). ``None`` makes ignite take it
        from the data loader at the next run.
        """
        super().load_state_dict(state_dict)
        self.state.epoch_length = None

    def _iteration(self, engine: SupervisedEvaluator, batchdata: dict[str, torch.Tensor]) -> dict:
        if not engine.amp:
            return super()._iteration(engine, batchdata)
        # MONAI's AMP branch with torch.autocast(<device type>) instead of torch.autocast("cuda").
        inputs, targets, args, kwargs = _unpack_batch(engine, batchdata)
        with engine.mode(engine.network):
            with devices.autocast(torch.device(engine.state.device), enabled=True, dtype=self.amp_dtype):
                pred = engine.inferer(inputs, engine.network, *args, **kwargs)
            # metrics and post-processing run in float32 whatever the autocast dtype was
            engine.state.output[Keys.PRED] = pred.float() if pred.is_floating_point() else pred
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


def _lower_is_better(current: float, best: float) -> bool:
    return current < best


def _higher_is_better(current: float, best: float) -> bool:
    return current > best


class BatchStatisticsInferer(Inferer):
    """Run ``inferer`` with every BatchNorm normalising by its batch's statistics (the reference's evaluation).

    For ``reference_batch_norm`` in ``train.json``: batches of validation octants, as the reference tests, through
    :func:`networks.batch_statistics`. Running statistics are not updated; dropout stays off.

    Args:
        inferer: the inferer to wrap (default: MONAI's ``SimpleInferer``, the network on the whole batch).
    """

    def __init__(self, inferer: Inferer | None = None) -> None:
        self.inferer = inferer if inferer is not None else SimpleInferer()

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> Any:
        with batch_statistics(network):
            return self.inferer(inputs, network, *args, **kwargs)
