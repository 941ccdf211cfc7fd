"""Smoke test of benchmarks/report.py (report.html page size and rewrite times over a cohort): 3 phantoms."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_three_phantoms_report_the_page_size_and_every_rewrite():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "report.py"), "--scans", "3", "--json"],
                          check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    assert figures["scans"] == figures["done"] == 3 and figures["rewrites"] == 4  # after each scan, and at the end
    assert 0 < figures["rewrite_median_s"] <= figures["rewrite_max_s"] and 1000 < figures["page_bytes"] < 100_000
    assert "machine: " in proc.stdout and "report.html: " in proc.stdout
