"""The bundle's files and metadata, as MONAI's model-zoo checks them (offline)."""

from __future__ import annotations

import json

import yaml

from tests.bundle.conftest import REPO

BUNDLE = REPO / "bundle"
REQUIRED_META = ("schema", "version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                 "required_packages_version", "task", "description", "authors", "copyright", "network_data_format")
TENSOR_KEYS = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")


def test_required_files_exist():
    for rel in ("LICENSE", "configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/inference.json",
                "configs/multi_gpu_train.json", "configs/logging.conf", "docs/README.md", "docs/data_license.txt",
                "large_files.yml"):
        assert (BUNDLE / rel).is_file(), rel


def test_metadata_schema_20240725_keys():
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for key in REQUIRED_META:
        assert key in meta, key
    assert meta["schema"].endswith("meta_schema_20240725.json")
    assert meta["version"] in meta["changelog"]
    assert not any("npu" in name.lower() for name in meta["required_packages_version"])
    fmt = meta["network_data_format"]
    image, pred = fmt["inputs"]["image"], fmt["outputs"]["pred"]
    for entry in (image, pred):
        assert all(k in entry for k in TENSOR_KEYS)
    assert (image["num_channels"], image["dtype"], pred["num_channels"], pred["dtype"]) == (1, "float32", 2, "float32")
    assert image["spatial_shape"] == ["16*n", "16*n", "16*n"]


def test_metadata_versions_match_the_installed_stack():
    import monai
    import numpy
    import torch

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["monai_version"] == monai.__version__
    assert torch.__version__.startswith(meta["pytorch_version"])
    assert meta["numpy_version"] == numpy.__version__


def test_no_weights_are_committed_and_large_files_parse():
    assert yaml.safe_load((BUNDLE / "large_files.yml").read_text())["large_files"] == []
    ignored = (REPO / ".gitignore").read_text()
    assert "bundle/models/*" in ignored and "*.pt" in ignored


def test_requirements_never_pull_torch_npu():
    for name in ("requirements.txt", "requirements-dev.txt"):
        lines = [ln.split("#")[0].strip().lower() for ln in (REPO / name).read_text().splitlines()]
        assert not any(ln.startswith(("torch_npu", "torch-npu")) for ln in lines)
