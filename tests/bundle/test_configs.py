"""The bundle as the single source of truth: declared transforms, copies pinned equal, one change reaching every user.

MONAI runs each of train.json and inference.json on its own, so the values both need (grid, HU normalisation,
window, network) are written in both; these tests pin the copies equal. A change made once, in one overlay, must
reach training's cache, validation, inference.json, ``pipeline segment`` and ``pipeline preprocess``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from pipeline import cli
from pipeline.config import bundle_root, load_config
from pipeline.data.luna16 import NORMALIZED_IMAGE_DIR, NORMALIZED_MASK_DIR
from tests.bundle.conftest import CONFIGS

RUN_CONFIGS = ("train.json", "inference.json")
OVERLAYS = ("quick.json", "evaluate.json", "multi_gpu_train.json", "multi_gpu_evaluate.json")
#: every transform the reference's preprocessing has, as train.json must declare it
REQUIRED_TARGETS = {"LoadImaged", "EnsureChannelFirstd", "Orientationd", "Spacingd", "transforms.LungMaskd",
                    "transforms.CropOrPadd", "transforms.Octantsd", "transforms.NormalizeHUd"}
#: values that train.json and inference.json must both hold, and hold equal
SHARED = ("image_key", "orientation", "vox_spacing", "spatial_size", "octant_split", "roi_size", "hu_window", "hu_mean",
          "hu_std", "sw_batch_size", "sw_overlap", "network_def", "device_name", "device_id", "amp")
#: a list of transforms built by anything but references joined with "+" and "[...]" is code, not a declaration
_DECLARATIVE_LIST = re.compile(r"^\$?[\s@\w#+\[\],]*$")


def _json(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


def _targets(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["_target_"]] if "_target_" in node else []) + [t for v in node.values() for t in _targets(v)]
    if isinstance(node, list):
        return [t for v in node for t in _targets(v)]
    return []


def _strings(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def test_train_json_declares_every_transform_of_both_chains():
    config = _json("train.json")
    declared = _targets([config["preprocessing_transforms"], config["intensity_transforms"], config["octants"]])
    assert REQUIRED_TARGETS <= set(declared)
    parser = load_config(CONFIGS / "train.json")
    train = parser.get_parsed_content("train#preprocessing").transforms
    sample = parser.get_parsed_content("train#sample_transforms").transforms
    validate = parser.get_parsed_content("validate#preprocessing").transforms
    names = lambda ts: [type(t).__name__ for t in ts]  # noqa: E731

    def declared_names(key: str) -> list[str]:  # the enabled items of a declared list, in order
        return [item["_target_"].split(".")[-1] for i, item in enumerate(config[key])
                if "_disabled_" not in item or not parser.get_parsed_content(f"{key}#{i}#_disabled_")]

    assert names(train) == declared_names("preprocessing_transforms") + ["Octantsd"]
    assert names(sample) == declared_names("intensity_transforms")
    assert names(validate) == names(train)[:-1] + names(sample)
    assert "ReferenceResampled" not in names(train)  # the reference's grid only on request
    parser["reference_grid"] = True
    reference = parser.get_parsed_content("train#preprocessing", lazy=False).transforms
    assert names(reference) == ["LoadImaged", "EnsureChannelFirstd", "EnsureFinited", "ReferenceResampled",
                                "LungMaskd", "CastToTyped", "Octantsd"]


@pytest.mark.parametrize("name", RUN_CONFIGS + OVERLAYS)
def test_no_config_builds_transforms_in_python(name):
    config = _json(name)
    for text in _strings(config):
        assert "presets" not in text and "_transforms(" not in text, text
    for node in _compose_nodes(config):
        transforms = node["transforms"]
        assert isinstance(transforms, list) or _DECLARATIVE_LIST.match(transforms), transforms


def _compose_nodes(node):
    if isinstance(node, dict):
        if node.get("_target_") == "Compose":
            yield node
        for v in node.values():
            yield from _compose_nodes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _compose_nodes(v)


@pytest.mark.parametrize("overlays", [(), ("quick.json",)])
def test_values_written_in_both_run_configs_are_equal(overlays):
    train = load_config([CONFIGS / "train.json", *(CONFIGS / o for o in overlays)])
    infer = load_config([CONFIGS / "inference.json", *(CONFIGS / o for o in overlays)])
    for key in SHARED:
        assert train[key] == infer[key] or train.get_parsed_content(key) == infer.get_parsed_content(key), key
    # the image side of the chains: the same transforms with the same settings
    image_train = [t for t in train.get_parsed_content("validate#preprocessing").transforms
                   if type(t).__name__ not in ("LungMaskd", "CropOrPadd", "CastToTyped")]
    image_infer = infer.get_parsed_content("preprocessing").transforms
    assert [type(t).__name__ for t in image_train][:-1] == [type(t).__name__ for t in image_infer]
    spacing = [t for t in (*image_train, *image_infer) if type(t).__name__ == "Spacingd"]
    assert len({(tuple(s.spacing_transform.pixdim), s.mode[0], s.padding_mode[0]) for s in spacing}) == 1
    normalise = [t.normalizer for t in (*image_train, *image_infer) if type(t).__name__ == "NormalizeHUd"]
    assert len({(n.hu_min, n.hu_max, n.mean, n.std) for n in normalise}) == 1
    assert tuple(train.get_parsed_content("validate#inferer").roi_size) == tuple(
        infer.get_parsed_content("inferer").roi_size)


@pytest.mark.parametrize("overlays", [(), ("quick.json",)])
def test_both_run_configs_turn_a_ct_into_the_same_network_input(overlays, one_change):
    """The strongest pin: the same CT through validation's chain and through inference.json's gives the same voxels
    on the same grid (inference.json does not crop: its output is cropped here as validation's is)."""
    from transforms import CropOrPad

    root, _ = one_change
    ct, mask = sorted((root / "data" / "lung_ct_image").glob("*.mhd"))[0], None
    mask = root / "data" / "seg-lungs-LUNA16" / ct.name
    train = load_config([CONFIGS / "train.json", *(CONFIGS / o for o in overlays)])
    infer = load_config([CONFIGS / "inference.json", *(CONFIGS / o for o in overlays)])
    validated = train.get_parsed_content("validate#preprocessing")({"image": str(ct), "label": str(mask)})["image"]
    inferred = infer.get_parsed_content("preprocessing")({"image": str(ct)})["image"]
    # validation crops/pads with the volume minimum after an int16 cast (in HU); crop inference's the same way
    minimum = (float(inferred.min()) * train.get_parsed_content("hu_std") + train.get_parsed_content("hu_mean"))
    fill = (np.trunc(minimum) - train.get_parsed_content("hu_mean")) / train.get_parsed_content("hu_std")
    cropped = CropOrPad(train.get_parsed_content("spatial_size"), fill=float(fill))(inferred)
    assert validated.shape == cropped.shape and validated.dtype == cropped.dtype
    np.testing.assert_allclose(validated.affine.numpy(), cropped.affine.numpy(), atol=1e-9)
    # the cache stores int16 HU (cast towards zero): less than one HU apart after normalisation
    one_hu = 1.0 / train.get_parsed_content("hu_std") + 1e-6
    np.testing.assert_allclose(validated.numpy(), cropped.numpy(), atol=one_hu, rtol=0)


def test_overlays_address_handlers_by_name():
    for name in OVERLAYS:
        for key in _json(name):
            assert not re.search(r"handlers#\d", key), f"{name}: {key} addresses a handler by position"
    handlers = _json("train.json")["train"]["handlers"]
    assert isinstance(handlers, dict) and {"tensorboard", "validation", "run_summary"} <= set(handlers)
    assert isinstance(_json("train.json")["validate"]["handlers"], dict)
    assert isinstance(_json("inference.json")["handlers"], dict)
    assert isinstance(_json("train.json")["evaluation"]["handlers"], dict)
    for name in ("evaluate.json", "multi_gpu_evaluate.json"):  # both select train.json's evaluation section
        assert _json(name)["validate#handlers"] == "@evaluation#handlers" and _json(name)["run"] == "@evaluation#run"


def test_bundle_root_is_the_folder_of_the_running_configs(tmp_path, monkeypatch):
    """MONAI's rule: the folder above configs/, whichever folder the run starts in; '.' outside a run."""
    configs = tmp_path / "mybundle" / "configs"
    configs.mkdir(parents=True)
    (configs / "probe.json").write_text(json.dumps({"imports": ["$import pipeline"],
                                                   "run": ["$pipeline.config.bundle_root()"]}))

    def root_seen(config_file: str) -> str:
        workflow = ConfigWorkflow(config_file=config_file, logging_file=False, workflow_type=None)
        workflow.initialize()
        return workflow.run()[0]

    monkeypatch.chdir(tmp_path)
    assert root_seen("mybundle/configs/probe.json") == "mybundle"
    assert root_seen(str(configs / "probe.json")) == str(tmp_path / "mybundle")
    monkeypatch.chdir(tmp_path / "mybundle")
    assert root_seen("configs/probe.json") == "."
    assert bundle_root() == "."


# ------------------------------------------------------------------- one change, every consumer


@pytest.fixture(scope="module")
def one_change(tmp_path_factory):
    """A synthetic LUNA16 and one overlay that changes the grid: 4 mm voxels, 48 x 48 x 32 volumes."""
    from pipeline.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("change_once")
    generate_dataset(root / "data", cases=2, seed=5, shape=(64, 64, 40))
    overlay = root / "grid.json"
    overlay.write_text(json.dumps({"vox_spacing": 4.0, "spatial_size": [48, 48, 32], "network_def#init_filters": 4,
                                   "cache_workers": 1, "num_workers": 0, "prefer_normalized": False}))
    return root, overlay


def _spacing(img) -> np.ndarray:
    return np.linalg.norm(np.asarray(img.affine, dtype=np.float64)[:3, :3], axis=0)


def test_one_overlay_changes_training_cache_and_validation(one_change):
    root, overlay = one_change
    parser = load_config([CONFIGS / "train.json", overlay], {"dataset_dir": str(root / "data"),
                                                             "output_dir": str(root / "eval")})
    train = parser.get_parsed_content("train#dataset")
    octant = train.volumes[0][0]  # the cached volume, cut into octants
    assert octant["image"].shape == (1, 24, 24, 16) and np.allclose(_spacing(octant["image"]), 4.0)
    validate = parser.get_parsed_content("validate#dataset")
    assert validate[0]["image"].shape == (1, 48, 48, 32) and np.allclose(_spacing(validate[0]["image"]), 4.0)
    assert tuple(parser.get_parsed_content("validate#inferer").roi_size) == (24, 24, 16)


def test_one_overlay_changes_bundle_inference_and_segment(one_change):
    from pipeline.inference.segmenter import LungSegmenter

    root, overlay = one_change
    ct = sorted((root / "data" / "lung_ct_image").glob("*.mhd"))[0]
    infer = load_config([CONFIGS / "inference.json", overlay])
    out = infer.get_parsed_content("preprocessing")({"image": str(ct)})["image"]
    assert np.allclose(_spacing(out), 4.0)
    assert tuple(infer.get_parsed_content("inferer").roi_size) == (24, 24, 16)

    class Zeros(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    segmenter = LungSegmenter(Zeros(), [CONFIGS / "inference.json", overlay], device="cpu")
    grid = segmenter.preprocess(sitk.ReadImage(str(ct)))
    assert grid.shape == out.shape and np.allclose(_spacing(grid), 4.0)
    assert tuple(segmenter.inferer.roi_size) == (24, 24, 16)


def test_one_overlay_changes_preprocess_command(one_change, tmp_path, capsys):
    root, overlay = one_change
    import shutil

    data = tmp_path / "data"
    shutil.copytree(root / "data", data)
    argv = ["preprocess", str(data), "--config", str(CONFIGS / "train.json"), str(overlay), "--workers", "1",
            "--no-progress"]
    assert cli.main(argv) == 0
    assert "2 done" in capsys.readouterr().out
    for folder in (NORMALIZED_IMAGE_DIR, NORMALIZED_MASK_DIR):
        for path in (data / folder).glob("*.mhd"):
            image = sitk.ReadImage(str(path))
            assert image.GetSize() == (48, 48, 32) and np.allclose(image.GetSpacing(), 4.0)
    # the reference's positional arguments still win over the config
    assert cli.main(argv[:2] + ["2.0", "16", "40", "40"] + argv[2:] + ["--overwrite"]) == 0
    image = sitk.ReadImage(str(next((data / NORMALIZED_IMAGE_DIR).glob("*.mhd"))))
    assert image.GetSize() == (40, 40, 16) and np.allclose(image.GetSpacing(), 2.0)


def test_metadata_and_config_parse_as_monai_reads_them():
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "quick.json")])
    parser.read_meta(str(CONFIGS / "metadata.json"))
    assert parser["_meta_#version"] in parser["_meta_#changelog"]
    assert Path(parser.get_parsed_content("bundle_root")) == Path(".")  # outside a workflow run


def test_an_installed_bundle_writes_to_the_working_folder_not_site_packages():
    """``pip install .`` puts the configs inside the package; runs from them write under the working directory."""
    import pipeline.config as config

    installed = config._INSTALLED_BUNDLE / "configs" / "train.json"
    assert config.root_of_config(installed) == Path(".")
    assert config.root_of_config(CONFIGS / "train.json") == CONFIGS.parent  # a checkout: its bundle folder


def test_every_switch_of_each_run_config_is_checked_before_use():
    """A switch given on the command line as ``false`` is the string "false" (true in Python): each config hands
    its switches to check_run_settings before anything reads them, and the check refuses strings."""
    from pipeline.training.settings import FLAGS

    train = json.loads((CONFIGS / "train.json").read_text())
    assert {name for name in FLAGS if name in train} <= set(train["run_settings"])
    assert all(train["run_settings"][name] == f"@{name}" for name in FLAGS if name in train)
    assert train["initialize"].index("$pipeline.training.settings.check_run_settings(@ckpt_dir, **@run_settings)") == 1
    for name in ("evaluate.json", "multi_gpu_evaluate.json"):
        assert json.loads((CONFIGS / name).read_text())["initialize"] == "@evaluation#initialize"
    assert any("check_run_settings" in step and "@run_settings" in step for step in train["evaluation"]["initialize"])
    inference = json.loads((CONFIGS / "inference.json").read_text())
    checked = next(step for step in inference["initialize"] if "check_run_settings" in step)
    assert {f"{name}=@{name}" for name in FLAGS if name in inference} <= set(re.findall(r"(\w+=@\w+)", checked))
    assert inference["initialize"].index(checked) < next(i for i, s in enumerate(inference["initialize"])
                                                          if "@load_pretrain" in s and "checkpoint_loader" in s)


@pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
def test_a_switch_that_is_not_a_boolean_is_one_clear_error(value, tmp_path):
    from pipeline.training.settings import check_run_settings
    from transforms.errors import InputError

    with pytest.raises(InputError, match=r"--reference_batch_norm must be True or False, got .*capital letter"):
        check_run_settings(tmp_path, reference_batch_norm=value)
    check_run_settings(tmp_path, reference_batch_norm=False, amp=True)  # real booleans pass
