"""The bundle end to end on tiny synthetic data: parse, train, resume, evaluate, infer, export."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from tests.bundle.conftest import CONFIGS, TINY, configs, run_bundle

pytestmark = pytest.mark.slow


def _workflow(files, workflow_type, **override):
    return ConfigWorkflow(config_file=[str(CONFIGS / f) for f in files], meta_file=str(CONFIGS / "metadata.json"),
                          logging_file=str(CONFIGS / "logging.conf"), workflow_type=workflow_type, **override)


@pytest.mark.parametrize(
    "files, workflow_type",
    [(["train.json"], "train"), (["train.json", "quick.json"], "train"), (["train.json", "evaluate.json"], "train"),
     (["train.json", "multi_gpu_train.json"], "train"), (["train.json", "multi_gpu_evaluate.json"], "train"),
     (["inference.json"], "infer")],
)
def test_every_config_parses_with_the_required_ids(files, workflow_type):
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f) for f in files])
    for key in ("bundle_root", "device", "dataset_dir", "network_def"):
        assert key in parser, f"{files} lacks {key}"
    if workflow_type == "train":
        for key in ("training", "run", "train#trainer", "validate#evaluator", "initialize"):
            assert key in parser
        assert parser["training"] == parser["run"]
    # property check as MONAI's model-zoo does it (no instantiation of datasets here)
    wf = _workflow(files, workflow_type)
    wf.parser.read_config([str(CONFIGS / f) for f in files])
    missing = [p for p in ("bundle_root", "device", "dataset_dir") if p not in wf.parser]
    assert not missing


def test_reference_defaults_in_train_json():
    t = ConfigParser()
    t.read_config(str(CONFIGS / "train.json"))
    get = t.get_parsed_content
    assert (get("vox_spacing"), get("spatial_size"), get("octant_split"), get("roi_size")) == (
        2.5, [160, 160, 128], [2, 2, 2], [80, 80, 64])
    assert (get("learning_rate"), get("weight_decay"), get("lr_milestones"), get("lr_decay")) == (1e-3, 1e-8, [50, 100], 0.3)
    assert (get("epochs"), get("batch_size"), get("loss_name"), t["network_def"]["act"]) == (200, 4, "ce", "prelu")
    assert (get("hu_window"), get("hu_mean"), get("hu_std")) == ([-1000.0, 400.0], -642.794, 459.512)


def test_training_writes_checkpoints_and_logs(trained_bundle):
    models = trained_bundle / "models"
    for name in ("model.pt", "vnet_checkpoint.pth.tar", "vnet_model_best.pth.tar"):
        assert (models / name).is_file(), name
    state = torch.load(models / "model.pt", weights_only=True)
    assert all(not k.startswith("module.") for k in state)  # a plain state dict
    full = torch.load(models / "vnet_checkpoint.pth.tar", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler", "trainer", "evaluator"} <= set(full)
    assert full["trainer"]["iteration"] == 2 * full["trainer"]["epoch_length"] and full["evaluator"]["best_metric_epoch"] >= 1
    log = (trained_bundle / "train.log").read_text()
    assert re.search(r"val_error: [0-9.]+ val_error_volume: [0-9.]+ val_mean_dice", log)
    assert "median FPS" in log


def test_resume_continues_the_epoch_count(trained_bundle, tiny_data, tmp_path):
    import shutil

    root = tmp_path / "bundle"
    shutil.copytree(trained_bundle / "models", root / "models")
    proc = run_bundle("run", "training", "--config_file", configs("train.json", "quick.json"), "--dataset_dir",
                      str(tiny_data), "--bundle_root", str(root), "--epochs", "3", "--resume", "True", *TINY)
    out = proc.stdout + proc.stderr
    assert "Restored all variables from" in out
    assert "Epoch[1] Complete" not in out and "Epoch[3] Complete" in out
    full = torch.load(root / "models" / "vnet_checkpoint.pth.tar", weights_only=True)
    assert full["trainer"]["iteration"] == 3 * full["trainer"]["epoch_length"]


def test_evaluate_writes_per_case_csv_and_summary(trained_bundle, tiny_data):
    proc = run_bundle("run", "training", "--config_file", configs("train.json", "quick.json", "evaluate.json"),
                      "--dataset_dir", str(tiny_data), "--bundle_root", str(trained_bundle), *TINY)
    assert "evaluation over" in proc.stdout
    rows = list(csv.DictReader((trained_bundle / "eval" / "metrics_per_case.csv").open()))
    assert rows and set(rows[0]) >= {"uid", "dice", "error_rate_pct", "hd95_mm", "asd_mm", "pred_volume_ml", "true_volume_ml"}
    assert all(0.0 <= float(r["dice"]) <= 1.0 and 0.0 <= float(r["orig_dice"]) <= 1.0 for r in rows)
    # in each scan's own geometry: the true volume is the mask file's, whatever the grid crops
    import numpy as np
    import SimpleITK as sitk

    for r in rows:
        mask = sitk.ReadImage(str(tiny_data / "seg-lungs-LUNA16" / f"{r['uid']}.mhd"))
        lung = (sitk.GetArrayFromImage(mask) > 0).sum() * np.prod(mask.GetSpacing()) / 1000
        assert float(r["orig_true_volume_ml"]) == pytest.approx(lung, rel=1e-5)
        assert np.isfinite(float(r["orig_hd95_mm"])) and float(r["orig_pred_volume_ml"]) > 0
    summary = json.loads((trained_bundle / "eval" / "metrics_summary.json").read_text())
    assert summary["cases"] == len(rows) and "mean_orig_dice" in summary
    assert "in the scans' own geometry: mean Dice" in proc.stdout


def test_inference_writes_masks_in_each_inputs_geometry(trained_bundle, tiny_data):
    out = trained_bundle / "eval" / "inference"
    run_bundle("run", "--config_file", str(CONFIGS / "inference.json"), "--dataset_dir", str(tiny_data / "lung_ct_image"),
               "--bundle_root", str(trained_bundle), "--output_dir", str(out), "--roi_size", "[16,16,16]", *TINY[:6])
    inputs = sorted((tiny_data / "lung_ct_image").glob("*.mhd"))
    assert inputs
    for src in inputs:
        dst = out / f"{src.stem}_lung.mhd"
        a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(dst))
        assert a.GetSize() == b.GetSize()
        np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
        assert set(np.unique(sitk.GetArrayFromImage(b))) <= {0, 1}


def test_export_torchscript_matches_checkpoint(trained_bundle):
    ts = trained_bundle / "models" / "model.ts"
    run_bundle("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(trained_bundle / "models" / "model.pt"),
               "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "inference.json"),
               "--bundle_root", str(trained_bundle), "--network_def#init_filters", "4")
    from networks import VNet

    net = VNet(init_filters=4)
    net.load_state_dict(torch.load(trained_bundle / "models" / "model.pt", weights_only=True))
    net.eval()
    scripted = torch.jit.load(str(ts))
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), net(x), rtol=1e-5, atol=1e-5)
    from monai.bundle import verify_net_in_out  # in this process: it raises on a mismatch

    verify_net_in_out(net_id="network_def", meta_file=str(CONFIGS / "metadata.json"),
                      config_file=str(CONFIGS / "inference.json"), bundle_root=str(trained_bundle), n=2,
                      **{"network_def#init_filters": 4})


def test_missing_dataset_dir_is_one_clear_line(tmp_path):
    proc = run_bundle("run", "training", "--config_file", str(CONFIGS / "train.json"), "--dataset_dir",
                      str(tmp_path / "nowhere"), "--bundle_root", str(tmp_path), check=False)
    assert proc.returncode != 0
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err_lines) == 1 and "nowhere" in err_lines[0] and "python -m pipeline synth" in err_lines[0]
    assert "Traceback" not in proc.stderr


def test_checkpoint_from_another_architecture_names_the_keys(trained_bundle, tiny_data):
    # the trained model has width 4; evaluating it as width 8 must say which keys do not fit
    proc = run_bundle("run", "training", "--config_file", configs("train.json", "quick.json", "evaluate.json"),
                      "--dataset_dir", str(tiny_data), "--bundle_root", str(trained_bundle), "--network_def#init_filters",
                      "8", *[a for a in TINY if a not in ("--network_def#init_filters", "4")], check=False)
    assert proc.returncode != 0
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "size mismatch" in err[0] and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "override, words",
    [(["--epochs", "abc"], "--epochs must be a whole number"), (["--learning_rate", "fast"], "--learning_rate must be"),
     (["--batch_size", "0"], "--batch_size must be a whole number >= 1"),
     (["--reference_grid", "false"], "--reference_grid must be True or False, got 'false' (str)")],
)
def test_override_with_a_wrong_type_is_one_clear_line(tiny_data, tmp_path, override, words):
    proc = run_bundle("run", "training", "--config_file", str(CONFIGS / "train.json"), "--dataset_dir", str(tiny_data),
                      "--bundle_root", str(tmp_path), *override, check=False)
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode != 0 and len(err) == 1 and words in err[0] and "Traceback" not in proc.stderr


def test_unwritable_output_folder_fails_before_training(tiny_data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    proc = run_bundle("run", "training", "--config_file", str(CONFIGS / "train.json"), "--dataset_dir", str(tiny_data),
                      "--bundle_root", str(blocker / "bundle"), check=False)
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode != 0 and len(err) == 1 and "is not writable" in err[0] and "Traceback" not in proc.stderr
    assert "Epoch[1]" not in proc.stdout + proc.stderr


def test_onnx_export_path(trained_bundle):
    pytest.importorskip("onnx")
    out = trained_bundle / "models" / "model.onnx"
    run_bundle("onnx_export", "network_def", "--filepath", str(out), "--ckpt_file", str(trained_bundle / "models" / "model.pt"),
               "--meta_file", str(CONFIGS / "metadata.json"), "--config_file", str(CONFIGS / "inference.json"),
               "--bundle_root", str(trained_bundle), "--network_def#init_filters", "4", "--input_shape", "[1, 1, 32, 32, 32]",
               "--use_trace", "True")
    import onnx

    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert len(model.graph.input) == 1 and len(model.graph.output) == 1


def test_atomic_export_replaces_only_on_success(trained_bundle, capsys):
    from pipeline import cli

    ts = trained_bundle / "models" / "atomic.ts"
    args = ["export", "ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file",
            str(trained_bundle / "models" / "model.pt"), "--meta_file", str(CONFIGS / "metadata.json"), "--config_file",
            str(CONFIGS / "inference.json"), "--bundle_root", str(trained_bundle), "--network_def#init_filters", "4"]
    assert cli.main(args) == 0, capsys.readouterr().err[-2000:]
    before = ts.read_bytes()
    assert torch.jit.load(str(ts)) is not None
    capsys.readouterr()
    code = cli.main([a if a != str(trained_bundle / "models" / "model.pt") else str(trained_bundle / "missing.pt")
                     for a in args])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: checkpoint") and "missing.pt' does not exist" in last
    assert ts.read_bytes() == before  # the failed export left the previous file untouched
    assert not [p for p in ts.parent.iterdir() if p.name.startswith(".atomic.ts")]
