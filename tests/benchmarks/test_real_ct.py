"""Smoke test of benchmarks/real_ct.py: CTs paired with reference masks by name, Dice per scan and the mean."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transforms.functional import LUNA16_HU_MEAN, LUNA16_HU_STD

REPO = Path(__file__).resolve().parents[2]


class Threshold(torch.nn.Module):
    """Lung where the normalised CT is below -500 HU (the reference's normalisation constants)."""

    def __init__(self) -> None:
        super().__init__()
        self.std, self.mean = LUNA16_HU_STD, LUNA16_HU_MEAN

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hu = x * self.std + self.mean
        return torch.cat([torch.zeros_like(hu), -500.0 - hu], dim=1)


def test_dice_per_scan_against_masks_of_the_same_name(tmp_path, capsys):
    from pipeline.data.synthetic import generate_dataset

    generate_dataset(tmp_path / "data", cases=2, seed=1, shape=(64, 64, 48))
    torch.jit.save(torch.jit.script(Threshold()), str(tmp_path / "threshold.ts"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from real_ct import main  # in this process

    assert main(["--images", str(tmp_path / "data" / "lung_ct_image"), "--masks",
                 str(tmp_path / "data" / "seg-lungs-LUNA16"), "--model", str(tmp_path / "threshold.ts"), "--json"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert len(result["scans"]) == 2 and all(0.0 < s["dice"] <= 1.0 for s in result["scans"])
    assert result["mean_dice"] == pytest.approx(sum(s["dice"] for s in result["scans"]) / 2)
    assert "mean Dice over 2 scans" in out and "machine: " in out
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "real_ct.py"), "--images", str(tmp_path / "none"),
                          "--masks", str(tmp_path), "--model", "x.ts"], check=False, cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--images" in bad.stderr and "Traceback" not in bad.stderr
