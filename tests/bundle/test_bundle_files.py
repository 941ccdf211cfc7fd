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
                "configs/multi_gpu_train.json", "configs/multi_gpu_evaluate.json", "configs/logging.conf", "docs/README.md", "docs/data_license.txt",
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


def _table_rows(markdown: str, header_start: str) -> list[list[str]]:
    lines = markdown.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header_start))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([cell.strip() for cell in ln.strip().strip("|").split("|")])
    return rows


def test_model_card_puts_the_published_error_only_beside_reference_mode():
    card = (BUNDLE / "docs" / "README.md").read_text()
    paragraphs = [p for p in card.split("\n\n") if "0.414" in p]
    assert paragraphs, "the model card should say which of our numbers compares with the reference's 0.414 %"
    for p in paragraphs:
        for condition in ("val_error_reference_bn", "not", "val_batch_size"):
            assert condition in p
    rows = _table_rows(card, "| difference from the reference")
    differences = {r[0] for r in rows}
    assert {"train/test split", "BatchNorm at evaluation", "resampling", "crop/pad window", "mixed precision O2",
            "checkpoint contents", "summary log"} <= differences
    for row in rows:  # every row names its switch or says there is none and why
        switch = row[-1]
        assert ":" in switch and ("`" in switch or switch.startswith("none")), row


def test_reference_table_names_a_switch_or_why_there_is_none():
    doc = (REPO / "docs" / "reference.md").read_text()
    rows = _table_rows(doc, "| difference | ours by default")
    assert len(rows) >= 9
    for row in rows:
        switch = row[-1]
        assert switch.startswith("none") or "`" in switch, row
        # the keys a switch names exist in the bundle
        for key in ("split", "reference_batch_norm", "reference_grid", "loss_name"):
            if switch.startswith(f"`{key}:"):
                assert f'"{key}"' in (BUNDLE / "configs" / "train.json").read_text()
