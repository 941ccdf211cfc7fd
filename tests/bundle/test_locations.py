"""The bundle runs from any folder with the installed packages (no PYTHONPATH), and its outputs go to its bundle root.

Three ways a user runs it: from the repository root (every other bundle test), from inside a bundle folder (MONAI
model-zoo's convention, ``--config_file configs/inference.json``), and from an unrelated folder with absolute config
paths and ``--bundle_root``. The configs find ``networks``, ``transforms`` and ``pipeline`` because they are installed
(``pip install -e .``, as the README says), not because the working directory holds them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from tests.bundle.conftest import CONFIGS, REPO, TINY
from transforms.functional import LUNA16_HU_MEAN, LUNA16_HU_STD

pytestmark = pytest.mark.slow


def _monai_bundle(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONWARNINGS="ignore", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"{args} in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_the_packages_are_imported_from_the_installation_not_the_working_folder(tmp_path):
    code = "import networks, pipeline, transforms; print(pipeline.config.bundle_dir())"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, "install the project first (pip install -e .): " + proc.stderr[-500:]
    assert (Path(proc.stdout.strip()) / "configs" / "train.json").is_file()


def test_inference_from_inside_a_bundle_folder_writes_under_it(trained_bundle, tiny_data, tmp_path):
    bundle = tmp_path / "my_bundle"
    shutil.copytree(REPO / "bundle" / "configs", bundle / "configs")
    shutil.copytree(trained_bundle / "models", bundle / "models")
    _monai_bundle("run", "--config_file", "['configs/inference.json','configs/quick.json']", "--dataset_dir",
                  str(tiny_data / "lung_ct_image"), "--roi_size", "[16,16,16]", *TINY[:6], cwd=bundle)
    written = sorted((bundle / "eval" / "inference").glob("*_lung.mhd"))
    inputs = sorted((tiny_data / "lung_ct_image").glob("*.mhd"))
    assert [p.name.replace("_lung", "") for p in written] == [p.name for p in inputs]


def test_training_from_another_folder_with_absolute_configs_and_bundle_root(tiny_data, tmp_path):
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "runs" / "one"
    elsewhere.mkdir()
    _monai_bundle("run", "training", "--config_file",
                  repr([str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")]), "--dataset_dir", str(tiny_data),
                  "--bundle_root", str(root), "--epochs", "1", *TINY, cwd=elsewhere)
    assert (root / "models" / "model.pt").is_file() and (root / "eval" / "tensorboard").is_dir()
    assert not any(elsewhere.iterdir()) and not (REPO / "bundle" / "eval" / "cache").exists()


class _Threshold(torch.nn.Module):
    """Normalised CT (N, 1, ...) -> lung / background logits (N, 2, ...): lung where the CT is darker than -475 HU.

    A network whose answer is known and far from empty, so that two paths agreeing on its masks means something."""

    def __init__(self) -> None:
        super().__init__()
        self.std, self.mean = float(LUNA16_HU_STD), float(LUNA16_HU_MEAN)  # attributes: TorchScript keeps them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hu = x * self.std + self.mean
        return torch.cat([torch.zeros_like(hu), -475.0 - hu], dim=1)


def test_bundle_inference_and_the_segment_tool_give_the_same_mask(tiny_data, tmp_path):
    """One inference path: the same preprocessing, network and sliding window from the same config. The segment
    tool's binary mask without its cleanup and its body-mask guard equals what inference.json writes, up to voxels on
    the lung's edge where MONAI's and SimpleITK's resampling of the CT differ by rounding. (The guard is tested in
    tests/pipeline/inference/test_guards.py; on these 45 mm phantoms at 4 mm it would have a 12-voxel body.)"""
    from pipeline.inference.segmenter import LungSegmenter

    stub = tmp_path / "threshold.ts"
    torch.jit.script(_Threshold()).save(str(stub))
    out = tmp_path / "bundle_masks"
    network = repr({"_target_": "torch.jit.load", "f": str(stub)})
    _monai_bundle("run", "--config_file", str(CONFIGS / "inference.json"), "--dataset_dir",
                  str(tiny_data / "lung_ct_image"), "--output_dir", str(out), "--network_def", network,
                  "--load_pretrain", "False", "--vox_spacing", "4.0", "--spatial_size", "[32,32,32]", cwd=tmp_path)
    segmenter = LungSegmenter(stub, CONFIGS / "inference.json", device="cpu", labels="binary", postprocess=False,
                              body_guard=False, overrides={"vox_spacing": 4.0, "spatial_size": [32, 32, 32]})
    cts = sorted((tiny_data / "lung_ct_image").glob("*.mhd"))
    assert cts
    for ct in cts:
        bundle_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{ct.stem}_lung.mhd")))
        tool_mask = sitk.GetArrayFromImage(segmenter.segment(ct).mask)
        assert bundle_mask.shape == tool_mask.shape
        assert 0.02 < bundle_mask.mean() < 0.9, "the stub should find lungs (and not everything)"
        agree = float(np.mean(bundle_mask == tool_mask))
        assert agree >= 0.995, f"{ct.name}: the two paths agree on {agree:.4%} of voxels"
