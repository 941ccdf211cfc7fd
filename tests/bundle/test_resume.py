"""A training run killed with SIGKILL mid-epoch resumes and ends bitwise where an uninterrupted run ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.bundle.conftest import REPO, TINY, configs, run_bundle

pytestmark = pytest.mark.slow
EPOCHS = "2"  # killed in epoch 2, resumed to the end of it
_i = TINY.index("--log_interval")
RUN = ["run", "training", "--config_file", configs("train.json", "quick.json"), "--epochs", EPOCHS, "--seed", "7",
       *TINY[:_i], "--log_interval", "1", *TINY[_i + 2:]]


def _final(root):
    return torch.load(root / "models" / "vnet_checkpoint.pth.tar", weights_only=True)


def _assert_same_state(a, b, path=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _assert_same_state(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a} != {b}"


def _kill_mid_second_epoch(args, timeout=300) -> str:
    """Start training, SIGKILL it after epoch 1 was checkpointed and an iteration of epoch 2 ran."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen, saved, deadline = [], False, time.time() + timeout
    try:
        for line in proc.stdout:
            seen.append(line)
            if "saved checkpoint" in line:
                saved = True
            elif saved and "Train Epoch: 1." in line:  # an iteration of epoch 2 has finished
                proc.send_signal(signal.SIGKILL)
                break
            if time.time() > deadline:
                break
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-30:])
    return "".join(seen)


def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    """The tiny network runs networks.fused's compiled kernels (their threshold lowered to 0), as full-size training
    does; resuming does not depend on them (the same checkpoint handlers run with or without)."""
    monkeypatch.delenv("VNET_NO_FUSED", raising=False)
    monkeypatch.setenv("VNET_FUSED_MIN_NUMEL", "0")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_bundle(*RUN, "--dataset_dir", str(tiny_data), "--bundle_root", str(straight))
    log = _kill_mid_second_epoch([*RUN, "--dataset_dir", str(tiny_data), "--bundle_root", str(killed)])
    assert "Epoch[2] Complete" not in log
    partial = _final(killed)
    assert partial["trainer"]["iteration"] == partial["trainer"]["epoch_length"]  # the checkpoint of epoch 1 is intact

    proc = run_bundle(*RUN, "--dataset_dir", str(tiny_data), "--bundle_root", str(killed), "--resume", "auto")
    out = proc.stdout + proc.stderr
    assert "Restored all variables from" in out
    assert "Epoch[1] Complete" not in out and f"Epoch[{EPOCHS}] Complete" in out

    assert "fused BatchNorm/add + PReLU kernels for CPU training compiled" in out
    assert "recompile_limit" not in out and "fused BatchNorm+PReLU disabled" not in out

    a, b = _final(straight), _final(killed)
    # weights, optimizer (Adam moments and step), scheduler, trainer counters, best-metric record, RNG: all bitwise equal
    _assert_same_state(a["model"], b["model"], "model")
    _assert_same_state(a["optimizer"], b["optimizer"], "optimizer")
    _assert_same_state(a["lr_scheduler"], b["lr_scheduler"], "lr_scheduler")
    _assert_same_state(a["evaluator"], b["evaluator"], "evaluator")
    _assert_same_state(a["trainer"], b["trainer"], "trainer")
    _assert_same_state(torch.load(straight / "models" / "model.pt", weights_only=True),
                       torch.load(killed / "models" / "model.pt", weights_only=True), "model.pt")


def test_resume_true_without_checkpoint_is_one_clear_line(tiny_data, tmp_path):
    proc = run_bundle(*RUN, "--dataset_dir", str(tiny_data), "--bundle_root", str(tmp_path), "--resume", "True", check=False)
    assert proc.returncode != 0
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "cannot resume: no checkpoint" in err[0] and "Traceback" not in proc.stderr
