"""Smoke test of benchmarks/shards.py (cache memory and build time for 1 and 2 processes): its --tiny run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_each_hold_half_the_cache_of_one(capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from shards import main  # in this process: its workers are forked from it, MONAI already imported

    assert main(["--tiny", "--processes", "1", "2", "--cases", "4", "--json"]) == 0
    proc = subprocess.CompletedProcess([], 0, capsys.readouterr().out, "")
    one, two = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (one["processes"], one["cases_per_process"], two["processes"], two["cases_per_process"]) == (1, 4, 2, 2)
    assert [r["own_cases"] for r in two["ranks"]] == [2, 2]
    # every case has the same cached size on the tiny grid: exactly half the bytes per process
    assert one["memory_mb_per_process"] > 0
    assert two["memory_mb_per_process"] * 2 == pytest.approx(one["memory_mb_per_process"])
    assert one["build_s"] > 0 and two["build_s"] > 0
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.strip().startswith(("1 |", "2 |"))]
    assert [r[0].strip() for r in rows] == ["1", "2"] and float(rows[1][3]) == pytest.approx(0.5)
    assert proc.stdout.startswith("wrote 4 synthetic cases") and "machine: " in proc.stdout


def test_more_processes_than_cases_is_refused():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "shards.py"), "--cases", "2", "--processes", "4"],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--processes 4 is more than --cases 2" in proc.stderr
    assert "Traceback" not in proc.stderr
