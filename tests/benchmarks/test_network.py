"""Smoke tests of benchmarks/network.py (--tiny) and benchmarks/gpu.sh (on the CPU): they run and report sane numbers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore", **env})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _dtypes() -> list[str]:
    """What network.py times by default here: fp32 and bf16, or fp32 alone on a CPU without native bf16."""
    import torch

    sys.path.insert(0, str(REPO))
    from benchmarks.network import default_dtypes

    return default_dtypes(torch.device("cpu"))


@pytest.mark.slow
def test_network_tiny_compares_both_models_in_every_setting_and_ours_unfused(tmp_path):
    """One --tiny run (each run compiles the fused kernels once): every setting, plus ours without them."""
    out = tmp_path / "network.json"
    proc = _run([sys.executable, "benchmarks/network.py", "--tiny", "--unfused", "--json", str(out),
                 "--reference-fps", "17.93"])
    results = json.loads(out.read_text())
    settings = {(r["mode"], r["dtype"]) for r in results}
    assert settings == {(m, d) for m in ("train", "infer") for d in _dtypes()}
    assert ("bf16 left out" in proc.stdout) == ("bf16" not in _dtypes())
    for mode, dtype in settings:
        models = {r["model"]: r for r in results if (r["mode"], r["dtype"]) == (mode, dtype)}
        assert set(models) == {"monai", "ours"} | ({"unfused"} if mode == "train" else set())
        assert len({r["flops"] for r in models.values()}) == 1 and models["ours"]["flops"] > 0  # same function
        assert models["monai"]["ratio"] == 1.0  # the baseline against itself
        for r in models.values():
            assert math.isfinite(r["samples_per_s"]) and r["samples_per_s"] > 0 and r["ratio"] > 0
    assert "all settings:" in proc.stdout and "peak matmul" in proc.stdout and "unfused" in proc.stdout
    # FPS against the reference (what benchmarks/gpu.sh prints): one line per training result, FPS = batch 1 / median
    fps_lines = [ln for ln in proc.stdout.splitlines() if " FPS " in ln and "x reference" in ln]
    trained = [r for r in results if r["mode"] == "train"]
    assert len(fps_lines) == len(trained)
    for r in trained:
        assert r["samples_per_s"] == 1 / r["median_s"]
        line = next(ln for ln in fps_lines if ln.split()[:2] == [r["model"], r["dtype"]])
        assert float(line.split()[-1]) == round(r["samples_per_s"] / 17.93, 2)


def test_without_fusion_switches_the_kernels_off_only_during_the_step(monkeypatch):
    sys.path.insert(0, str(REPO))
    from benchmarks.network import _without_fusion
    from networks import fused

    monkeypatch.delenv(fused.ENV_DISABLE, raising=False)
    seen = []
    _without_fusion(lambda: seen.append(os.environ.get(fused.ENV_DISABLE)))()
    assert seen == ["1"] and fused.ENV_DISABLE not in os.environ


def test_gpu_script_times_the_training_step_at_the_references_settings(tmp_path):
    """benchmarks/gpu.sh hands benchmarks/network.py the reference's FPS setting: batch 4, 80 x 80 x 64, training,
    the requested precisions, FPS against 17.93 (the FPS lines themselves: the --tiny test above). A stand-in
    ``python`` on PATH records the command instead of running it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$CALLS"\n')
    (fake / "python").chmod(0o755)
    env = {"PATH": f"{fake}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls"), "DEVICE": "cuda",
           "OUT": str(tmp_path)}
    proc = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr
    argv = (tmp_path / "calls").read_text().splitlines()
    assert argv[0] == "benchmarks/network.py"
    sys.path.insert(0, str(REPO))
    from benchmarks.network import _parse_args

    args = _parse_args(argv[1:])
    assert (args.device, args.batch, tuple(args.size), args.modes) == ("cuda", 4, (80, 80, 64), ["train"])
    assert args.dtypes == ["fp16", "bf16", "fp32"] and args.reference_fps == 17.93
    assert (args.steps, args.warmup, args.json) == (20, 5, tmp_path / "gpu.json")


def test_fp16_training_step_autocasts_and_updates_the_weights():
    """The fp16 step gpu.sh times on accelerators (autocast + GradScaler), here on a tiny network on the CPU."""
    import torch

    sys.path.insert(0, str(REPO))
    from benchmarks.network import DTYPES, make_step

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 2, 1))
    x, y = torch.randn(2, 1, 8, 8, 8), torch.randint(0, 2, (2, 8, 8, 8))
    before = [p.detach().clone() for p in net.parameters()]
    seen = []
    net[2].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    make_step(net, x, y, train=True, dtype=DTYPES["fp16"], device=torch.device("cpu"))()
    assert seen == [torch.float16]
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, net.parameters()))


def test_gpu_script_without_an_accelerator_says_so_in_one_line():
    import torch

    from pipeline.device import setup_device

    if setup_device("auto").type != "cpu" or torch.cuda.is_available():
        pytest.skip("an accelerator is present: gpu.sh would run the real benchmark")
    env = {k: v for k, v in os.environ.items() if k != "DEVICE"}
    proc = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "no CUDA or NPU device" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
