"""Resume of a 2-process ``torchrun`` run (gloo, CPU) after one worker is SIGKILLed mid-epoch.

Two ways back, both ending bitwise where an uninterrupted 2-process run ends (weights, Adam state, scheduler,
trainer counters and every rank's RNG, evaluator best record):

* ``torchrun --max-restarts=1``: torchrun restarts both workers and ``--resume auto`` makes them continue from the
  last checkpoint by themselves (the job exits 0);
* no restarts: the job exits non-zero; the same command run again with ``--resume auto`` continues.

The bundle's V-Net has dropout, so the comparison fails unless each rank gets its own RNG back (a checkpoint
written by rank 0 alone would give every rank rank 0's RNG). :class:`KillOnce` (imported by the children through
a config overlay) kills rank 1 once: a marker file in the bundle root remembers that it did.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from tests.bundle.conftest import CONFIGS
from tests.bundle.test_distributed import SMALL, _run
from tests.bundle.test_resume import _assert_same_state

pytestmark = pytest.mark.slow

EPOCHS = 3
KILL_EPOCH, KILL_ITERATION = 2, 1  # rank 1 dies after the first iteration of epoch 2 (epoch 1 is checkpointed)
MARKER = "killed.marker"


class KillOnce:
    """SIGKILL rank ``rank`` after iteration ``iteration`` of epoch ``epoch``, the first time only.

    Args:
        bundle_root: where the marker file goes (its presence disarms the handler).
        rank: the rank to kill.
        epoch: 1-based epoch.
        iteration: 1-based iteration within that epoch.
    """

    def __init__(self, bundle_root: str, rank: int = 1, epoch: int = KILL_EPOCH, iteration: int = KILL_ITERATION):
        self.marker = Path(bundle_root) / MARKER
        self.rank, self.epoch, self.iteration = rank, epoch, iteration

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from pipeline.device import get_rank

        within = (engine.state.iteration - 1) % engine.state.epoch_length + 1
        if (get_rank(), engine.state.epoch, within) == (self.rank, self.epoch, self.iteration) and not self.marker.exists():
            self.marker.write_text(f"rank {self.rank} killed at epoch {self.epoch}, iteration {self.iteration}\n")
            os.kill(os.getpid(), signal.SIGKILL)


def _command(data: Path, root: Path, *torchrun_args: str) -> list[str]:
    overlay = root / "kill_once.json"
    overlay.write_text(json.dumps({
        "kill_once": {"_target_": "tests.bundle.test_resume_distributed.KillOnce", "bundle_root": str(root)},
        "training": ["$@kill_once.attach(@train#trainer)", "$@train#trainer.run()"],
    }))
    files = [str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json"), str(overlay)]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *torchrun_args,
            "-m", "monai.bundle", "run", "training", "--config_file", repr(files), "--dataset_dir", str(data),
            "--bundle_root", str(root), *SMALL, "--epochs", str(EPOCHS), "--seed", "7", "--log_interval", "1",
            "--resume", "auto", "--dist_timeout_s", "60"]


def _final(root: Path) -> dict:
    return torch.load(root / "models" / "vnet_checkpoint.pth.tar", weights_only=True)


def _epochs_done(root: Path) -> int:
    trainer = _final(root)["trainer"]
    return trainer["iteration"] // trainer["epoch_length"]


def _assert_same_run(a: Path, b: Path) -> None:
    final_a, final_b = _final(a), _final(b)
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        _assert_same_state(final_a[key], final_b[key], key)
    assert len(final_b["trainer"]["rng_per_rank"]) == 2
    _assert_same_state(torch.load(a / "models" / "model.pt", weights_only=True),
                       torch.load(b / "models" / "model.pt", weights_only=True), "model.pt")


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory) -> Path:
    """The same 2-process run, never killed (the marker is there from the start)."""
    root = tmp_path_factory.mktemp("straight")
    (root / MARKER).write_text("disarmed\n")
    _run(_command(tiny_data, root))
    assert _epochs_done(root) == EPOCHS
    return root


def test_torchrun_max_restarts_restarts_the_killed_worker_and_resumes_bitwise(tiny_data, tmp_path, uninterrupted):
    proc = _run(_command(tiny_data, tmp_path, "--max-restarts=1"))
    log = proc.stdout + proc.stderr
    assert (tmp_path / MARKER).exists(), "rank 1 was never killed"
    assert "exitcode: -9" in log  # torchrun saw the SIGKILL ...
    assert "torchrun restart 1" in log and "Restored all variables from" in log  # ... restarted, and they resumed
    _assert_same_run(uninterrupted, tmp_path)


def test_killed_torchrun_job_rerun_with_resume_auto_ends_bitwise(tiny_data, tmp_path, uninterrupted):
    first = _run(_command(tiny_data, tmp_path), check=False)
    assert first.returncode != 0 and (tmp_path / MARKER).exists()
    assert _epochs_done(tmp_path) == KILL_EPOCH - 1  # the last complete epoch is on disk, intact

    second = _run(_command(tiny_data, tmp_path))
    assert "Restored all variables from" in second.stdout + second.stderr
    _assert_same_run(uninterrupted, tmp_path)


def test_checkpoint_holds_each_ranks_own_rng(uninterrupted):
    """The checkpoint holds two different RNG states; rank 0's is also the single-process ``rng`` entry."""
    trainer = _final(uninterrupted)["trainer"]
    per_rank = trainer["rng_per_rank"]
    assert not torch.equal(per_rank[0]["torch"], per_rank[1]["torch"])  # seeded seed + rank
    assert torch.equal(per_rank[0]["torch"], trainer["rng"]["torch"])


def test_kill_once_fires_only_on_its_rank_epoch_and_iteration(tmp_path, monkeypatch):
    killed = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.setattr("pipeline.device.get_rank", lambda: 1)
    handler = KillOnce(str(tmp_path))
    engine = Engine(lambda e, b: None)
    for epoch, iteration in [(1, 1), (2, 2), (2, 1), (2, 1)]:  # iterations within an epoch of 2
        engine.state.epoch, engine.state.epoch_length = epoch, 2
        engine.state.iteration = (epoch - 1) * 2 + iteration
        handler(engine)
    assert killed == [signal.SIGKILL]  # once: the marker disarms it
