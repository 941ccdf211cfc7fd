"""The reference's error rate, the throughput handler and the atomic checkpoint handlers."""

from __future__ import annotations

import math
import time

import pytest
import torch
from ignite.engine import Engine, Events

from pipeline.files import load_checkpoint
from pipeline.training.checkpoints import BestCheckpoint, LatestCheckpoint
from pipeline.training.handlers import Throughput
from pipeline.training.metrics import VoxelErrorRate, voxel_errors


def onehot(lbl: torch.Tensor) -> torch.Tensor:
    """(B, *spatial) int -> (B, 2, *spatial) one-hot float."""
    return torch.stack([(lbl == 0), (lbl == 1)], 1).float()


def test_voxel_errors_whole_volume():
    y = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    y[0, :2] = 1
    p = y.clone()
    p[0, 3, 3, 3] = 1  # one false positive
    p[0, 0, 0, 0] = 0  # one false negative
    counts = voxel_errors(onehot(p), onehot(y))
    assert counts.tolist() == [[2.0, 64.0]]


def test_voxel_errors_counts_only_lung_octants():
    # lung only in the x < 2 half: 4 of 8 octants contain lung
    y = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    y[0, :2] = 1
    p = y.clone()
    p[0, 3, 3, 3] = 1  # error inside an empty octant: not counted by the reference
    p[0, 0, 0, 0] = 0  # error inside a lung octant: counted
    counts = voxel_errors(onehot(p), onehot(y), octant_split=(2, 2, 2))
    assert counts.tolist() == [[1.0, 32.0]]
    # without dropping empty octants every voxel counts
    assert voxel_errors(onehot(p), onehot(y), (2, 2, 2), drop_empty=False).tolist() == [[2.0, 64.0]]


def test_voxel_errors_rejects_indivisible_shape():
    y = onehot(torch.zeros(1, 5, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(5, 4, 4\)"):
        voxel_errors(y, y, (2, 2, 2))


def test_error_rate_metric_accumulates_over_cases():
    metric = VoxelErrorRate()
    y = torch.zeros(2, 4, 4, 4, dtype=torch.long)
    p = y.clone()
    p[0, 0, 0, :2] = 1  # 2 errors in case 0, none in case 1
    metric(onehot(p), onehot(y))
    assert metric.aggregate().item() == pytest.approx(100.0 * 2 / 128)
    metric.reset()
    assert math.isnan(metric.aggregate().item())


def _engine_with_model(epochs=2, iters=3):
    net = torch.nn.Conv3d(1, 2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)

    def step(engine, batch):
        opt.zero_grad()
        out = net(batch["image"])
        loss = out.mean()
        loss.backward()
        opt.step()
        return {"loss": loss.detach(), "pred": out.detach(), "label": batch["label"]}

    engine = Engine(step)
    engine.state.device = torch.device("cpu")
    engine.optimizer = opt
    data = [{"image": torch.randn(2, 1, 4, 4, 4), "label": torch.zeros(2, 1, 4, 4, 4)} for _ in range(iters)]
    return engine, net, opt, data


def test_throughput_logs_reference_line_and_fps(caplog, tmp_path):
    engine, _, _, data = _engine_with_model()
    handler = Throughput(world_size=2, log_interval=1, warmup=0, loss_file=tmp_path / "loss.txt")
    handler.attach(engine)
    with caplog.at_level("INFO", logger="pipeline.throughput"):
        engine.run(data, max_epochs=1)
    lines = [r.message for r in caplog.records if r.message.startswith("Train Epoch:")]
    assert len(lines) == 3
    assert "[3/3 (100%)]" in lines[-1] and "FPS:" in lines[-1] and "Lr: 0.100000" in lines[-1]
    assert engine.state.metrics["fps"] > 0 and engine.state.metrics["fps_median"] > 0
    # FPS counts batch 2 x 2 processes: it is at least the single-process figure
    assert engine.state.metrics["fps_with_data"] <= engine.state.metrics["fps"] * 1.0001
    assert len((tmp_path / "loss.txt").read_text().split()) == 3


def test_throughput_splits_each_epoch_into_waiting_for_data_and_computing(caplog):
    import time

    engine, _, _, data = _engine_with_model(iters=4)

    def slow_loader():  # 0.1 s per batch in the loader, a slowed step of at least 0.05 s
        for batch in data:
            time.sleep(0.1)
            yield batch

    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: time.sleep(0.05))
    Throughput(log_interval=0, warmup=0).attach(engine)  # attached after the sleep: the step includes it
    with caplog.at_level("INFO", logger="pipeline.throughput"):
        engine.run(slow_loader(), max_epochs=1, epoch_length=4)
    wait, compute = engine.state.metrics["data_wait_s"], engine.state.metrics["compute_s"]
    assert 0.4 <= wait < 0.4 + 0.3 and 0.2 <= compute < wait
    (line,) = [r.message for r in caplog.records if r.message.startswith("Epoch 1:")]
    share = round(100 * wait / (wait + compute))
    assert f"waiting for data {wait:.2f} s ({share} %), computing {compute:.2f} s" in line


def test_latest_and_best_checkpoints_are_written_and_loadable(tmp_path):
    engine, net, opt, data = _engine_with_model()
    latest = LatestCheckpoint(tmp_path, {"model": net, "optimizer": opt}, filename="vnet_checkpoint.pth.tar")
    latest.attach(engine)
    engine.run(data, max_epochs=2)
    ckpt = load_checkpoint(tmp_path / "vnet_checkpoint.pth.tar")
    assert set(ckpt) == {"model", "optimizer"}
    torch.testing.assert_close(ckpt["model"]["weight"], net.weight.detach())
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind

    evaluator = Engine(lambda e, b: None)
    evaluator.state.best_metric_epoch = -1
    best = BestCheckpoint(tmp_path, net, {"model": net})
    best.attach(evaluator)

    @evaluator.on(Events.EPOCH_COMPLETED, )
    def _not_best(e):  # runs after BestCheckpoint: nothing to save in epoch 1
        pass

    evaluator.run([0], max_epochs=1)
    assert not (tmp_path / "model.pt").exists()
    evaluator.state.best_metric_epoch = 2
    evaluator.state.key_metric_name = "val_error"
    evaluator.state.best_metric = 0.5
    evaluator.state.max_epochs = 2
    evaluator.run([0], max_epochs=2)
    state = load_checkpoint(tmp_path / "model.pt")
    assert set(state) == {"weight", "bias"}  # a plain state dict
    assert (tmp_path / "vnet_model_best.pth.tar").is_file()


def test_time_budget_stops_training_after_its_seconds_and_none_means_no_limit():
    from pipeline.training.handlers import TimeBudget

    def run(limit_s):
        engine = Engine(lambda e, batch: time.sleep(0.01))
        TimeBudget(limit_s).attach(engine)
        t0 = time.perf_counter()
        engine.run(range(5), max_epochs=10)
        return engine.state.iteration, time.perf_counter() - t0

    iterations, elapsed = run(0.1)
    assert 2 <= iterations < 50 and elapsed >= 0.1  # stopped by the budget, not by the 50 iterations
    assert run(None)[0] == 50 and run(0)[0] == 50
