"""Shared tiny synthetic dataset and a trained tiny bundle for the bundle tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "bundle" / "configs"
#: a tiny problem: 4 small phantoms, 4 mm voxels, 32^3 volumes, 16^3 octants, V-Net of width 4
TINY = ["--vox_spacing", "4.0", "--spatial_size", "[32,32,32]", "--network_def#init_filters", "4",
        "--cache_workers", "1", "--num_workers", "0", "--log_interval", "0",
        "--drop_empty_octants", "true"]  # the tiny phantoms' lung-free octants would only add iterations


def run_bundle(*args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m monai.bundle <args>`` from the repository root."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"monai.bundle {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def configs(*names: str) -> str:
    return repr([str(CONFIGS / n) for n in names])


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from pipeline.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("luna16")
    generate_dataset(root, cases=4, seed=3, shape=(64, 64, 40))
    return root


@pytest.fixture(scope="session")
def trained_bundle(tiny_data, tmp_path_factory) -> Path:
    """A bundle root after 2 epochs of training on the tiny data."""
    root = tmp_path_factory.mktemp("bundle")
    proc = run_bundle("run", "training", "--config_file", configs("train.json", "quick.json"), "--dataset_dir",
                      str(tiny_data), "--bundle_root", str(root), "--epochs", "2", *TINY)
    (root / "train.log").write_text(proc.stdout + proc.stderr)
    return root
