"""Device-generic AMP in the trainer/evaluator, the NaN guard, and resumable engine state."""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.engines import SupervisedTrainer as MonaiTrainer

from pipeline.training.engines import NonFiniteLossError, SupervisedEvaluator, SupervisedTrainer, rng_state, set_rng_state


class DtypeProbe(torch.nn.Module):
    """Conv3d that records the dtype its convolution computed in."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(1, 2, 3, padding=1)
        self.seen: list[torch.dtype] = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append(y.dtype)
        return y


def _loader(n=2, value=None):
    data = []
    for i in range(n):
        img = torch.randn(2, 1, 8, 8, 8) if value is None else torch.full((2, 1, 8, 8, 8), value)
        data.append({"image": img, "label": (torch.rand(2, 1, 8, 8, 8) > 0.5).long(), "uid": [f"case{i}a", f"case{i}b"]})
    return data


def _ce(pred, label):
    return torch.nn.functional.cross_entropy(pred.float(), label[:, 0])


def _trainer(net, amp, loader=None, cls=SupervisedTrainer, **kw):
    return cls(device=torch.device("cpu"), max_epochs=1, train_data_loader=loader or _loader(), network=net,
               optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=_ce, amp=amp, **kw)


def test_amp_on_cpu_really_runs_in_bfloat16():
    net = DtypeProbe()
    trainer = _trainer(net, amp=True)
    assert trainer.scaler is None  # bf16 needs no loss scaling
    trainer.run()
    assert net.seen and set(net.seen) == {torch.bfloat16}


def test_negative_control_monai_trainer_stays_fp32_off_cuda():
    net = DtypeProbe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = _trainer(net, amp=True, cls=MonaiTrainer)
        trainer.run()
    assert set(net.seen) == {torch.float32}  # what this project's engines fix


def test_fp32_path_is_monais():
    net = DtypeProbe()
    _trainer(net, amp=False).run()
    assert set(net.seen) == {torch.float32}


def test_fp16_on_cpu_uses_a_grad_scaler_that_is_checkpointed():
    net = DtypeProbe()
    trainer = _trainer(net, amp=True, amp_dtype="fp16", loss_scale=128.0)
    assert trainer.scaler is not None and trainer.scaler.get_scale() == 128.0
    trainer.run()
    assert set(net.seen) == {torch.float16}
    state = trainer.state_dict()
    assert state["scaler"]["scale"] == 128.0 and "rng" in state
    other = _trainer(DtypeProbe(), amp=True, amp_dtype="fp16", loss_scale=128.0)
    other.load_state_dict(state)
    assert other.state.epoch == 1 and other.state.iteration == 2


def test_nan_loss_stops_before_the_step_naming_the_cases():
    net = DtypeProbe()
    before = net.conv.weight.detach().clone()
    trainer = _trainer(net, amp=False, loader=_loader(1, value=float("nan")))
    with pytest.raises(NonFiniteLossError, match=r"iteration 1 .*case0a, case0b"):
        trainer.run()
    torch.testing.assert_close(net.conv.weight.detach(), before)  # never stepped


def test_evaluator_autocasts_and_returns_float32_predictions():
    net = DtypeProbe()
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=_loader(1), network=net, amp=True,
                                    metric_cmp_fn="lower")
    evaluator.run()
    assert net.seen == [torch.bfloat16]
    assert evaluator.state.output[0]["pred"].dtype == torch.float32
    assert "best_metric" in evaluator.state_dict()


def test_evaluator_resume_takes_its_epoch_length_from_its_own_data():
    """A checkpoint written by rank 0 (2 validation batches) must not make a 1-batch shard run twice."""
    rank0 = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=_loader(2), network=DtypeProbe(),
                                metric_cmp_fn="lower")
    rank0.run()
    assert rank0.state.epoch_length == 2
    rank1 = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=_loader(1), network=DtypeProbe(),
                                metric_cmp_fn="lower")
    rank1.load_state_dict(rank0.state_dict())
    rank1.run(global_epoch=2)
    assert rank1.state.epoch_length == 1 and rank1.state.iteration == 1


def test_rng_state_round_trip_is_weights_only_safe(tmp_path):
    import random

    import numpy as np

    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    a = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    b = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(a[0], b[0])
    assert np.array_equal(a[1], b[1]) and a[2] == b[2]
