"""Every entry point over the generated bad-input corpus (tests/data/make_bad_inputs.py).

Each broken case gets one clear line naming it; a run that can continue does, and its exit status says
whether anything failed; nothing half-written is left; no traceback for these expected errors.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bundle.conftest import CONFIGS, TINY, configs, run_bundle
from tests.data.make_bad_inputs import CORPUS, make_corpus

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
BAD_UIDS = [f"1.0.bad.{name}" for name in CORPUS]
#: cases that load and can be trained on, or refused early by the tool, depending on the entry point
USABLE_FOR_TRAINING = {"1.0.bad.empty_mask", "1.0.bad.huge_spacing", "1.0.bad.mismatched_mask"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_corpus(root, good=3)
    return root


def _pipeline(*args, timeout=600):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if p.is_file() or p.is_dir()]


def test_preprocess_over_the_corpus(corpus, tmp_path):
    proc = _pipeline("preprocess", str(corpus), "4", "32", "32", "32", "--workers", "2", "--no-progress")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "3 done" in proc.stdout or "4 done" in proc.stdout
    failed = [ln for ln in proc.stderr.splitlines() if " failed: " in ln]
    for uid in BAD_UIDS:
        if uid == "1.0.bad.empty_mask":
            assert f"{uid}.mhd': the mask has no lung voxel" in proc.stderr  # a warning, the case is still written
            continue
        lines = [ln for ln in failed if uid in ln]
        assert len(lines) == 1, (uid, proc.stderr[-2000:])
        assert not list((corpus / "normalized_lung_ct").glob(f"{uid}.*"))
    assert _no_temporaries(corpus / "normalized_lung_ct") and _no_temporaries(corpus / "normalized_lung_mask")


def test_train_and_evaluate_exclude_bad_cases_and_go_on(corpus, tmp_path):
    root = tmp_path / "bundle"
    args = ["--dataset_dir", str(corpus), "--bundle_root", str(root), "--prefer_normalized", "False", *TINY]
    proc = run_bundle("run", "training", "--config_file", configs("train.json", "quick.json"), "--epochs", "1", *args)
    out = proc.stdout + proc.stderr
    for uid in set(BAD_UIDS) - USABLE_FOR_TRAINING - {"1.0.bad.mismatched_mask"}:
        assert out.count(f"case {uid} is excluded") == 1, uid
    assert (root / "models" / "model.pt").is_file()
    proc = run_bundle("run", "training", "--config_file", configs("train.json", "quick.json", "evaluate.json"), *args)
    assert "evaluation over" in proc.stdout and "Traceback" not in proc.stderr


def test_train_stops_with_a_summary_past_max_bad_cases(corpus, tmp_path):
    proc = run_bundle("run", "training", "--config_file", configs("train.json", "quick.json"), "--epochs", "1",
                      "--dataset_dir", str(corpus), "--bundle_root", str(tmp_path), "--prefer_normalized", "False",
                      "--max_bad_cases", "0", *TINY, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "could not be used (limit max_bad_cases = 0)" in err[0]
    assert not (tmp_path / "models" / "model.pt").exists()


def test_segment_over_the_corpus(corpus, tmp_path):
    import torch

    from networks import VNet

    model = tmp_path / "model.pt"
    torch.save(VNet(init_filters=4).state_dict(), model)
    cfg = tmp_path / "tiny.json"
    cfg.write_text('{"network_def#init_filters": 4, "vox_spacing": 4.0, "roi_size": [16, 16, 16]}')
    out = tmp_path / "masks"
    proc = _pipeline("segment", str(corpus / "lung_ct_image"), "--out", str(out), "--model", str(model), "--config",
                     str(CONFIGS / "inference.json"), str(cfg), "--no-progress", "--no-qc")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    text = proc.stdout + proc.stderr
    refused = {"1.0.bad.truncated_raw", "1.0.bad.wrong_header_size", "1.0.bad.nan_volume", "1.0.bad.image_2d",
               "1.0.bad.image_4d", "1.0.bad.huge_spacing"}
    for uid in refused:
        assert sum(uid in ln and "fail" in ln.lower() for ln in text.splitlines()) == 1, (uid, text[-3000:])
        assert not list(out.glob(f"{uid}_lung*"))
    assert _no_temporaries(out)
