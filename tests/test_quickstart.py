"""The README's first command (after install) on a tiny budget: scripts/quickstart.sh end to end."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_runs_every_step_and_reports_where_things_went(tmp_path):
    env = dict(os.environ, QUICKSTART_CASES="4", QUICKSTART_EPOCHS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run(["bash", "scripts/quickstart.sh", str(tmp_path / "qs")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in range(1, 6):
        assert f"== {step}/5" in proc.stdout
    out = tmp_path / "qs"
    for rel in ("models/model.pt", "models/model.ts", "models/vnet_checkpoint.pth.tar", "eval/metrics_per_case.csv",
                "segmentation/lung_stats.csv"):
        assert (out / rel).is_file(), rel
    assert list((out / "segmentation").glob("*_lung.mhd")) and list((out / "segmentation").glob("*_qc.png"))
    assert "mean Dice" in proc.stdout and "held-out synthetic cases" in proc.stdout
