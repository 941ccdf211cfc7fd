"""The bundle's reference mode: the reference's batch-norm evaluation beside ours, and its checkpoints in and out."""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from monai.engines.utils import IterationEvents
from torch import nn

from pipeline.config import config_file
from pipeline.training.evaluation import POOLED_ERROR, POOLED_ERROR_REFERENCE_BN, SUMMARY_FILE
from tests.bundle.conftest import TINY, configs, run_bundle

TINY_OVERRIDES = dict(zip([k.lstrip("-") for k in TINY[::2]], TINY[1::2]))


def _batch_statistics_forward(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``network`` in eval mode with every BatchNorm's forward replaced by F.batch_norm on the batch's statistics."""
    originals = {}

    def forward(bn):
        return lambda inp: F.batch_norm(inp, None, None, bn.weight, bn.bias, training=True, momentum=0.0, eps=bn.eps)

    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            originals[module] = module.forward
            module.forward = forward(module)
    try:
        with torch.no_grad():
            return network.eval()(x)
    finally:
        for module, original in originals.items():
            module.forward = original


def test_reference_batch_norm_evaluator_is_a_batch_statistics_forward(tiny_data, tmp_path):
    parser = ConfigParser()
    parser.read_config([config_file("train.json"), config_file("quick.json")])
    overrides = {"dataset_dir": str(tiny_data), "bundle_root": str(tmp_path), "reference_batch_norm": True,
                 "val_batch_size": 3, "vox_spacing": 4.0, "spatial_size": [32, 32, 32],
                 "network_def#init_filters": 4, "cache_workers": 1, "num_workers": 0}
    for key, value in overrides.items():
        parser[key] = value
    evaluator = parser.get_parsed_content("validate_reference_bn#evaluator")
    network = parser.get_parsed_content("network")
    torch.manual_seed(0)
    for module in network.modules():  # running statistics far from any batch's, so the two modes must differ
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    running = {k: v.clone() for k, v in network.state_dict().items()}
    captured = []
    evaluator.add_event_handler(IterationEvents.FORWARD_COMPLETED,
                                lambda e: captured.append((e.state.batch["image"].clone(), e.state.output["pred"].clone())))
    evaluator.run()
    assert len(captured) >= 2 and captured[0][0].shape[0] == 3  # batches of val_batch_size octants
    for image, pred in captured:
        torch.testing.assert_close(pred, _batch_statistics_forward(network, image), rtol=1e-4, atol=1e-4)
        with torch.no_grad():
            assert not torch.allclose(pred, network.eval()(image), atol=1e-3)  # running statistics: another answer
    for key, value in network.state_dict().items():  # nothing learnt, running statistics untouched
        torch.testing.assert_close(value, running[key])
    assert not network.training and all(not m.training for m in network.modules())
    assert math.isfinite(evaluator.state.metrics["val_error_reference_bn"])


def test_evaluate_reports_both_error_rates(trained_bundle, tiny_data, tmp_path):
    """Evaluated from the reference's checkpoint format (``module.`` keys under ``state_dict``) of the trained model."""
    state = torch.load(trained_bundle / "models" / "model.pt", weights_only=True)
    reference_ckpt = tmp_path / "vnet_model_best.pth.tar"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in state.items()}, "best_prec1": 1.0},
               reference_ckpt)
    proc = run_bundle("run", "training", "--config_file", configs("train.json", "quick.json", "evaluate.json"),
                      "--dataset_dir", str(tiny_data), "--bundle_root", str(trained_bundle),
                      "--model_file", str(reference_ckpt), "--reference_batch_norm", "True", "--val_batch_size", "2",
                      *TINY)
    out = proc.stdout + proc.stderr
    assert "the reference's checkpoint" in out and str(reference_ckpt) in out
    summary = json.loads((trained_bundle / "eval" / SUMMARY_FILE).read_text())
    ours, reference = summary[POOLED_ERROR], summary[POOLED_ERROR_REFERENCE_BN]
    assert 0 <= ours <= 100 and 0 <= reference <= 100 and summary["reference_bn_batch_size"] == 2
    assert "BatchNorm running statistics), " in out
    assert f"evaluation the reference's way (BatchNorm on the statistics of each batch of 2 octants): error rate " \
           f"{reference:.3f} %" in out
    assert "val_error_reference_bn" in out and "val_error:" in out  # both key metrics in the metrics log
