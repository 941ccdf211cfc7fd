"""The reference's checkpoints in and out: segment, evaluate, resume and export read them; export writes them."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from ignite.engine import Engine

from networks import VNet
from pipeline import cli
from pipeline.export import export_reference
from pipeline.files import REFERENCE_CHECKPOINT_KEYS, is_reference_checkpoint, reference_checkpoint
from pipeline.training.checkpoints import ResumeLoader, WeightsLoader
from transforms.errors import InputError

REPO = Path(__file__).resolve().parents[2]
INFERENCE_CONFIG = REPO / "bundle" / "configs" / "inference.json"
TINY_CONFIG = {"network_def": {"_target_": "networks.VNet", "init_filters": 4, "dropout_prob": 0.0},
               "roi_size": [32, 32, 32], "sw_batch_size": 2, "vox_spacing": 2.5}
#: the reference's V-Net (Ascend port, ``VNet(elu=False, nll=True)``): convolutions per stage and widths
REFERENCE_DOWN = {"down_tr32": 1, "down_tr64": 2, "down_tr128": 3, "down_tr256": 2}
REFERENCE_UP = {"up_tr256": 2, "up_tr128": 2, "up_tr64": 1, "up_tr32": 1}
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def reference_state_dict_keys() -> set[str]:
    """Every key of the reference's ``state_dict``, from its module structure (conv + ContBatchNorm3d + PReLU)."""
    keys: set[str] = set()

    def conv(p: str) -> None:
        keys.update({f"{p}.weight", f"{p}.bias"})

    def bn(p: str) -> None:
        keys.update(f"{p}.{k}" for k in BN)

    def luconvs(stage: str, n: int) -> None:
        for i in range(n):
            conv(f"{stage}.ops.{i}.conv1")
            bn(f"{stage}.ops.{i}.bn1")
            keys.add(f"{stage}.ops.{i}.relu1.weight")

    conv("in_tr.conv1"), bn("in_tr.bn1"), keys.add("in_tr.relu1.weight")
    for stage, n in REFERENCE_DOWN.items():
        conv(f"{stage}.down_conv"), bn(f"{stage}.bn1")
        keys.update({f"{stage}.relu1.weight", f"{stage}.relu2.weight"})
        luconvs(stage, n)
    for stage, n in REFERENCE_UP.items():
        conv(f"{stage}.up_conv"), bn(f"{stage}.bn1")
        keys.update({f"{stage}.relu1.weight", f"{stage}.relu2.weight"})
        luconvs(stage, n)
    conv("out_tr.conv1"), bn("out_tr.bn1"), conv("out_tr.conv2"), keys.add("out_tr.relu1.weight")
    return keys


def test_our_state_dict_keys_are_the_references():
    with torch.device("meta"):
        net = VNet()
    state = net.state_dict()
    assert set(state) == reference_state_dict_keys()
    # shapes of the reference's widths (16 .. 256 channels, 5^3 kernels, 2^3 down/up convolutions)
    assert state["in_tr.conv1.weight"].shape == (16, 1, 5, 5, 5)
    assert state["down_tr256.down_conv.weight"].shape == (256, 128, 2, 2, 2)
    assert state["up_tr256.up_conv.weight"].shape == (256, 128, 2, 2, 2)  # ConvTranspose3d: (in, out // 2, ...)
    assert state["out_tr.conv2.weight"].shape == (2, 2, 1, 1, 1)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A tiny V-Net's weights as model.pt and as the reference's checkpoints (Ascend: plain; original: module.)."""
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(1)
    net = VNet(init_filters=4, dropout_prob=0.0)
    for m in net.modules():  # non-trivial running statistics, so a load that skips buffers would show
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.9, 1.1)
    state = net.state_dict()
    torch.save(state, folder / "model.pt")
    torch.save({"epoch": 120, "state_dict": state, "error": 0.414}, folder / "ascend.pth.tar")
    torch.save({"epoch": 249, "state_dict": {f"module.{k}": v for k, v in state.items()}, "best_prec1": 0.355},
               folder / "original.pth.tar")
    torch.manual_seed(2)
    torch.save(VNet(init_filters=4, dropout_prob=0.0).state_dict(), folder / "other.pt")
    (folder / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    return folder


def _phantom(path: Path) -> None:
    rng = np.random.default_rng(0)
    ct = np.full((32, 32, 32), 40, np.int16)
    ct[6:26, 6:15, 4:28] = -850
    ct[6:26, 17:26, 4:28] = -850
    image = sitk.GetImageFromArray(ct + rng.integers(-20, 20, ct.shape).astype(np.int16))
    image.SetSpacing((2.5, 2.5, 2.5))
    sitk.WriteImage(image, str(path))


def _segment(weights: Path, model: str, tmp_path: Path) -> np.ndarray:
    ct = tmp_path / "ct.mha"
    if not ct.exists():
        _phantom(ct)
    out = tmp_path / model
    code = cli.main(["segment", str(ct), "--out", str(out), "--model", str(weights / model), "--config",
                     str(INFERENCE_CONFIG), str(weights / "tiny.json"), "--device", "cpu", "--labels", "binary",
                     "--no-postprocess", "--no-qc", "--no-progress"])
    assert code == 0
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct_lung.mha")))


def test_segment_reads_the_reference_checkpoints(weights, tmp_path):
    plain = _segment(weights, "model.pt", tmp_path)
    assert 0 < plain.mean() < 1  # a mask with both labels, so equality below means something
    np.testing.assert_array_equal(_segment(weights, "ascend.pth.tar", tmp_path), plain)
    np.testing.assert_array_equal(_segment(weights, "original.pth.tar", tmp_path), plain)
    assert not np.array_equal(_segment(weights, "other.pt", tmp_path), plain)  # other weights, other mask


@pytest.mark.parametrize("name", ["ascend.pth.tar", "original.pth.tar"])
def test_weights_loader_loads_every_tensor_of_a_reference_checkpoint(weights, name, caplog):
    net = VNet(init_filters=4, dropout_prob=0.0)
    with caplog.at_level(logging.INFO, logger="pipeline.training.checkpoints"):
        WeightsLoader(weights / name, net)()
    expected = torch.load(weights / "model.pt", weights_only=True)
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)
    assert "the reference's checkpoint" in caplog.text


def test_weights_loader_names_keys_that_do_not_fit(weights):
    with pytest.raises(RuntimeError, match="size mismatch"):
        WeightsLoader(weights / "ascend.pth.tar", VNet(init_filters=8))()


def test_resume_from_a_reference_checkpoint_loads_the_weights_only(weights, caplog):
    net = VNet(init_filters=4, dropout_prob=0.0)
    optimizer = torch.optim.Adam(net.parameters())
    engine = Engine(lambda e, b: None)
    with caplog.at_level(logging.WARNING, logger="pipeline.training.checkpoints"):
        ResumeLoader(weights / "original.pth.tar", {"model": net, "optimizer": optimizer, "trainer": engine})(engine)
    expected = torch.load(weights / "model.pt", weights_only=True)
    torch.testing.assert_close(net.state_dict()["in_tr.conv1.weight"], expected["in_tr.conv1.weight"])
    assert "optimizer, schedule and epoch count start fresh" in caplog.text
    assert engine.state.epoch == 0 and not optimizer.state  # nothing else was restored


@pytest.mark.parametrize("data_parallel", [False, True])
def test_export_reference_round_trip(weights, tmp_path, data_parallel):
    target = tmp_path / "vnet_model_best.pth.tar"
    args = [sys.executable, "-m", "pipeline", "export", "reference", "--ckpt_file", str(weights / "ascend.pth.tar"),
            "--filepath", str(target)] + (["--data-parallel"] if data_parallel else [])
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    written = torch.load(target, weights_only=True)
    assert tuple(written) == REFERENCE_CHECKPOINT_KEYS and is_reference_checkpoint(written)
    assert written["epoch"] == 120 and written["error"] == pytest.approx(0.414)  # carried over
    prefix = "module." if data_parallel else ""
    expected = torch.load(weights / "model.pt", weights_only=True)
    assert list(written["state_dict"]) == [prefix + k for k in expected]
    for key, value in expected.items():
        torch.testing.assert_close(written["state_dict"][prefix + key], value, rtol=0, atol=0)
    # and back: the reference's file loads into our network unchanged
    net = VNet(init_filters=4, dropout_prob=0.0)
    WeightsLoader(target, net)()
    torch.testing.assert_close(net.state_dict()["out_tr.conv2.weight"], expected["out_tr.conv2.weight"])


def test_export_reference_of_our_full_checkpoint_carries_epoch_and_best_error(weights, tmp_path):
    state = torch.load(weights / "model.pt", weights_only=True)
    ours = {"model": state, "optimizer": {}, "trainer": {"epoch": 7, "iteration": 70},
            "evaluator": {"best_metric": 1.25, "best_metric_epoch": 6}}
    torch.save(ours, tmp_path / "vnet_checkpoint.pth.tar")
    export_reference(tmp_path / "vnet_checkpoint.pth.tar", tmp_path / "ref.pth.tar")
    written = torch.load(tmp_path / "ref.pth.tar", weights_only=True)
    assert (written["epoch"], written["error"]) == (7, 1.25)
    from_model_pt = export_reference(weights / "model.pt", tmp_path / "ref2.pth.tar")
    written = torch.load(from_model_pt, weights_only=True)
    assert written["epoch"] == 0 and math.isnan(written["error"])  # a plain state dict has neither


def test_reference_checkpoint_helper_and_bad_input(tmp_path):
    ckpt = reference_checkpoint({"a": torch.zeros(1)}, epoch=3, error=0.5, data_parallel=True)
    assert list(ckpt["state_dict"]) == ["module.a"] and (ckpt["epoch"], ckpt["error"]) == (3, 0.5)
    assert not is_reference_checkpoint({"model": {}, "state_dict": {}})
    with pytest.raises(InputError, match="export needs --filepath"):
        from pipeline.export import export

        export("reference", ["--ckpt_file", "x.pt"])
    with pytest.raises(InputError, match="unknown option --epoch"):
        from pipeline.export import export

        export("reference", ["--ckpt_file", "x.pt", "--filepath", "y.pt", "--epoch", "3"])


def test_ckpt_export_of_a_data_parallel_reference_checkpoint(weights, tmp_path, capsys):
    target = tmp_path / "model.ts"
    code = cli.main(["export", "ckpt_export", "network_def", "--filepath", str(target), "--ckpt_file",
                     str(weights / "original.pth.tar"), "--meta_file", str(REPO / "bundle" / "configs" / "metadata.json"),
                     "--config_file", str(INFERENCE_CONFIG), "--bundle_root", str(tmp_path), "--network_def#init_filters",
                     "4"])
    assert code == 0, capsys.readouterr().err[-2000:]
    net = VNet(init_filters=4)
    net.load_state_dict(torch.load(weights / "model.pt", weights_only=True))
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(target))(x), net.eval()(x), rtol=1e-5, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["model.ts"]
    assert not list(weights.glob(".weights.*"))  # the plain weights handed to MONAI were removed


def test_export_reference_help_prints_its_usage(capsys):
    assert cli.main(["export", "reference", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m pipeline export reference --ckpt_file FILE --filepath FILE")
