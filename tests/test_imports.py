"""Importing the project changes nothing in the user's process: every module of the three packages, in a fresh one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("transforms", "networks", "pipeline")

CHILD = r"""
import importlib, json, logging, os, pkgutil, sys, warnings

import torch
from monai.data import image_writer

image_writer.init()  # MONAI's extension -> writer table, as MONAI itself fills it on first use
def writers():
    return {ext: [f"{w.__module__}.{w.__qualname__}" for w in ws] for ext, ws in image_writer.SUPPORTED_WRITERS.items()}

def state():
    return {
        "excepthook": repr(sys.excepthook),
        "writers": writers(),
        "environ": dict(os.environ),
        "root_logger": [logging.getLogger().level, [repr(h) for h in logging.getLogger().handlers]],
        "warning_filters": [repr(f) for f in warnings.filters],
        "default_dtype": str(torch.get_default_dtype()),
        "threads": torch.get_num_threads(),
        "grad": torch.is_grad_enabled(),
    }

before = state()
names = []
for package in PACKAGES:
    module = importlib.import_module(package)
    names.append(package)
    for info in pkgutil.walk_packages(module.__path__, prefix=package + "."):
        importlib.import_module(info.name)
        names.append(info.name)
after = state()
print(json.dumps({"modules": names, "before": before, "after": after, "torch_npu": "torch_npu" in sys.modules}))
"""


def test_importing_every_module_changes_no_global_state():
    code = f"PACKAGES = {PACKAGES!r}\n" + CHILD
    env = {k: v for k, v in os.environ.items() if not k.startswith("VNET_")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = {"pipeline.cli", "pipeline.device.distributed", "pipeline.inference.segmenter",
                "pipeline.training.engines", "pipeline.data.luna16", "transforms.io", "networks.fused"}
    assert expected <= set(result["modules"]), "the walk missed modules"
    for what in result["before"]:
        assert result["after"][what] == result["before"][what], f"importing changed {what}"
    assert not result["torch_npu"], "importing imported torch_npu"


def test_fused_kernels_read_their_environment_when_used(monkeypatch):
    """The size threshold is read at each use, not frozen at import (a variable set later takes effect)."""
    from networks import fused

    monkeypatch.delenv(fused.ENV_MIN_NUMEL, raising=False)
    assert fused._min_numel() == fused.MIN_NUMEL
    monkeypatch.setenv(fused.ENV_MIN_NUMEL, "123")
    assert fused._min_numel() == 123
