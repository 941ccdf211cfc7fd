"""Smoke test of benchmarks/report.py (report.html page size and rewrite times over a cohort): 3 phantoms."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_three_phantoms_report_the_page_size_and_every_rewrite(capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from report import main  # in this process: the benchmark imports nothing a test process lacks

    assert main(["--scans", "3", "--json"]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["scans"] == figures["done"] == 3 and figures["rewrites"] == 4  # after each scan, and at the end
    assert 0 < figures["rewrite_median_s"] <= figures["rewrite_max_s"] and 1000 < figures["page_bytes"] < 100_000
    assert "machine: " in out and "report.html: " in out
