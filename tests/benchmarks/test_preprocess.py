"""Smoke test of ``benchmarks/preprocess.py --tiny`` and its port of the reference's crop/pad (never a speed assertion)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from benchmarks.preprocess import TINY_SIZE, UID, reference_crop_or_pad, reference_resample
from tests.reference_algorithm import copy_normalized

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("src_shape", "size_zyx"), [
    ((5, 7, 7), (8, 10, 12)),  # pad everything (odd differences)
    ((9, 7, 7), (6, 10, 10)),  # crop z, pad in-plane
    ((4, 11, 11), (4, 8, 12)),  # Y_MAX < d <= X_MAX: crop y, pad x
    ((4, 13, 13), (4, 8, 10)),  # crop both in-plane
    ((4, 8, 8), (4, 8, 8)),  # already the size
])
def test_reference_crop_or_pad_matches_the_reference_loops(src_shape, size_zyx):
    src = np.random.default_rng(0).integers(-1000, 1000, src_shape).astype(np.int16)
    out, start = reference_crop_or_pad(src, size_zyx)
    np.testing.assert_array_equal(out, copy_normalized(src, size_zyx))
    # the returned offset locates output voxel 0 in the source grid
    probe = tuple(max(0, -s) for s in start)
    if all(p + s < n for p, s, n in zip(probe, start, src_shape)):
        assert out[probe] == src[tuple(p + s for p, s in zip(probe, start))]


def test_reference_crop_or_pad_rejects_what_the_reference_asserts():
    with pytest.raises(ValueError, match="y == x"):
        reference_crop_or_pad(np.zeros((4, 6, 8), np.int16), (4, 8, 8))


def test_reference_resample_shape_rule():
    out = reference_resample(np.zeros((10, 20, 20), np.int16), (1.25, 0.7, 0.7), 2.5)
    assert out.shape == (5, 6, 6) and out.dtype == np.int16  # round(old shape x old spacing / new spacing)


@pytest.mark.slow
def test_tiny_run(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "preprocess.py"), "--tiny", "--json",
                           "--workdir", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1])
    assert any(ln.startswith("| implementation | load s | resample s") for ln in lines)
    rows = [ln for ln in lines if ln.startswith(("| ours (preprocess_case)", "| reference (scipy zoom order 3)"))]
    assert len(rows) == 2
    assert any(ln.startswith("machine: ") for ln in lines) and any(ln.startswith("888 LUNA16 scans") for ln in lines)
    for value in (report["ratio"], report["cpu_ratio"], report["extrapolation"]["ours_888_min"],
                  report["extrapolation"]["reference_888_min"], *report["median"]["ours"].values(),
                  *report["median"]["reference"].values()):
        assert math.isfinite(value) and value > 0
    assert report["extrapolation"]["parallelism_source"].startswith("assumed")
    assert set(report["stages"]["ours"]) == {"load", "resample", "labels_crop", "write"}
    assert 0.5 < report["agreement"]["dice"] <= 1 and math.isfinite(report["agreement"]["hu_mae"])
    for impl in ("ours", "reference"):
        for folder in ("normalized_lung_ct", "normalized_lung_mask"):
            path = tmp_path / f"out_{impl}" / folder / f"{UID}.mhd"
            assert path.is_file(), path
            assert sitk.ReadImage(str(path)).GetSize() == TINY_SIZE
