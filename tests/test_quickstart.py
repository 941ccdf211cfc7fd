"""The README's first command (after install) on a tiny budget: scripts/quickstart.sh end to end."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: MONAI's own notice on every bundle run (configs run code), not caused by anything in this project
MONAI_SECURITY_NOTICE = "Only proceed if this config is from a source you trust"


@pytest.mark.slow
def test_quickstart_runs_every_step_and_reports_where_things_went(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # every warning shows, as for a user
    env.update(QUICKSTART_CASES="4", QUICKSTART_EPOCHS="1")
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
    # the one command for your own CT: model.ts carries its settings, no --config
    (command,) = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("python -m pipeline segment")]
    assert command.endswith(f"--model {out}/models/model.ts") and "--config" not in command
    assert (out / "segmentation" / "report.html").is_file()
    for log in ("train.log", "evaluate.log", "segment.log"):
        text = (out / log).read_text()
        warned = [ln for ln in text.splitlines() if re.search(r"Warning\b|\bWARNING\b", ln)  # also FutureWarning etc.
                  and MONAI_SECURITY_NOTICE not in ln]
        assert not warned, f"{log}: {warned[:3]}"
