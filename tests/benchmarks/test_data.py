"""Smoke test of benchmarks/data.py (the training input pipeline vs the training step): its --tiny run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from monai.bundle import ConfigParser

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "data.py"
VARIANTS = ("memory-int16", "memory-float32", "disk-int16")
WORKERS = (0, 1, 2)
BATCH = 2  # the --tiny batch


def _config_transform_names() -> list[str]:
    """Class names of train.json's cached preprocessing + per-sample transforms, built by the config itself."""
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "train.json"))
    names = []
    for key in ("train#preprocessing", "train#sample_transforms"):
        names += [type(t).__name__ for t in parser.get_parsed_content(key).transforms]
    return names


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench_data")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--json", "--workdir", str(work)], check=False,
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1]), work


def test_tiny_run_prints_a_table_row_per_setting(tiny_run):
    stdout, _, _ = tiny_run
    rows = [line for line in stdout.splitlines() if line.startswith("| ")]
    for variant in VARIANTS:
        assert any(row.startswith(f"| {variant} |") and "MB" not in row for row in rows), variant
        for workers in WORKERS:
            assert any(row.startswith(f"| {variant} | {workers} | {BATCH} |") for row in rows), (variant, workers)
    assert any(row.startswith(f"| {BATCH} |") for row in rows)  # the step table
    assert "machine:" in stdout and "load average" in stdout


def test_tiny_run_reports_positive_finite_rates_and_ratios(tiny_run):
    _, result, _ = tiny_run
    assert result["tiny"] is True
    assert {(r["variant"], r["workers"], r["batch"]) for r in result["loaders"]} == \
        {(v, w, BATCH) for v in VARIANTS for w in WORKERS}
    for r in result["loaders"]:
        for key in ("first_batch_s", "samples_per_s", "epoch_samples_per_s", "cpu_ms_per_sample", "ratio"):
            assert math.isfinite(r[key]) and r[key] > 0, (r, key)
        assert r["goal_met"] == (r["ratio"] >= 4.0)
    (step,) = result["steps"]
    assert step["batch"] == BATCH and math.isfinite(step["samples_per_s"]) and step["samples_per_s"] > 0
    for c in result["caches"]:
        assert c["samples"] >= BATCH and c["build_s_per_case"] > 0 and c["mb_per_case"] > 0


def test_cache_variants_hold_the_dtypes_they_name(tiny_run):
    _, result, _ = tiny_run
    caches = {c["variant"]: c for c in result["caches"]}
    assert caches["memory-int16"]["dtypes"] == {"image": "int16", "label": "uint8"}
    assert caches["disk-int16"]["dtypes"] == {"image": "int16", "label": "uint8"}
    assert caches["memory-float32"]["dtypes"] == {"image": "float32", "label": "float32"}
    # float32 holds 4 + 4 bytes per voxel instead of 2 + 1
    assert caches["memory-float32"]["mb_per_case"] == pytest.approx(caches["memory-int16"]["mb_per_case"] * 8 / 3)


def test_benchmark_uses_the_transforms_that_train_json_builds(tiny_run):
    _, result, _ = tiny_run
    expected = _config_transform_names()
    for c in result["caches"]:
        assert c["transforms"] == expected, c["variant"]


def test_tiny_run_writes_the_data_and_disk_cache_it_measures(tiny_run):
    _, result, work = tiny_run
    assert len(list((work / "synth_tiny" / "lung_ct_image").glob("*.mhd"))) == result["caches"][0]["cases"]
    disk = [p for d in work.glob("cache_disk-int16") for p in (d / "cache").glob("*") if p.is_file()]
    assert len(disk) == result["caches"][0]["cases"]  # one PersistentDataset file per volume
