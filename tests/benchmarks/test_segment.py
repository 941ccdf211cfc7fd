"""Smoke test of benchmarks/segment.py --tiny: every stage timed, peak RSS reported, the mask written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ("load", "preprocess", "network", "invert_postprocess", "write")


@pytest.mark.slow
def test_segment_tiny_times_every_stage_and_writes_outputs(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/segment.py", "--tiny", "--variants", "fp32",
                           "--workdir", str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    header = next(ln for ln in proc.stdout.splitlines() if ln.startswith("| variant"))
    assert all(stage in header for stage in STAGES)
    # one variant (one child process): the others run the same stages with another model
    row = next(ln for ln in proc.stdout.splitlines() if ln.startswith("| fp32 |"))
    numbers = [float(x) for x in re.findall(r"\d+\.\d+", row)]
    assert len(numbers) == len(STAGES) + 3 and all(n >= 0 for n in numbers)  # model s, stages, total, GB
    total, peak_gb = numbers[-2], numbers[-1]
    assert 0 < total and 0 < peak_gb < 3
    assert list((tmp_path / "out" / "fp32").rglob("*_lung*")), "no mask written"
    assert "machine:" in proc.stdout
