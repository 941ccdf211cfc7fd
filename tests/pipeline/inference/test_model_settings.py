"""A TorchScript model carries its settings: ckpt_export stores the configs inside it, and the segment tool uses
them when no --config is given (a state dict still takes them from --config)."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import save_net_with_metadata

from networks import VNet
from pipeline.inference.segmenter import LungSegmenter, stored_configs
from tests.pipeline.inference.test_segmenter import INFERENCE_CONFIG, phantom

OVERLAY = {"vox_spacing": 4.0, "roi_size": [32, 32, 32], "network_def#init_filters": 4, "output_postfix": "_mine"}


def _grid_spacing(segmenter: LungSegmenter, image: sitk.Image) -> list[float]:
    return [round(float(v), 6) for v in np.linalg.norm(np.asarray(segmenter.resample(image).affine)[:3, :3], axis=0)]


def test_a_torchscript_model_runs_at_the_settings_stored_inside_it(tmp_path):
    net = torch.jit.script(VNet(init_filters=4, dropout_prob=0.0).eval())
    extra = {"quick": json.dumps(OVERLAY).encode(), "inference": INFERENCE_CONFIG.read_bytes()}
    save_net_with_metadata(net, str(tmp_path / "model"), meta_values={"version": "0.1"}, more_extra_files=extra)
    configs = stored_configs(tmp_path / "model.ts")
    assert configs is not None and "preprocessing" in configs[0] and configs[1] == OVERLAY  # base config first
    image, _ = phantom(shape=(40, 40, 24))
    own = LungSegmenter(tmp_path / "model.ts", device="cpu")
    assert _grid_spacing(own, image) == [4.0, 4.0, 4.0] and own.postfix == "_mine"
    assert list(own.inferer.roi_size) == [32, 32, 32] and "stored configs" in own.settings()["config"]
    assert own.segment(image).mask.GetSize() == image.GetSize()
    # --config given: it wins; a model without stored configs (or a state dict) uses the default config
    assert _grid_spacing(LungSegmenter(tmp_path / "model.ts", INFERENCE_CONFIG, device="cpu"), image) == [2.5] * 3
    torch.jit.save(net, str(tmp_path / "bare.ts"))
    assert stored_configs(tmp_path / "bare.ts") is None
    assert _grid_spacing(LungSegmenter(tmp_path / "bare.ts", device="cpu"), image) == [2.5] * 3
