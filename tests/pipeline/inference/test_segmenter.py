"""The lung-segmentation tool: geometry per format, left/right, postprocessing, input checks, outputs, CLI.

Most tests use a stub "network" that thresholds the HU input, so the true lung mask is known: a phantom on a
2.5 mm grid (the network grid) whose body is fat (-100 HU) with two lungs (-850 HU) at known world positions.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from matplotlib.image import imread

from networks import VNet
from pipeline import cli
from pipeline.data.checks import check_image, read_ct
from pipeline.data.inputs import find_ct_inputs
from pipeline.inference.outputs import STATS_CSV, output_paths
from pipeline.inference.report import lung_stats
from pipeline.inference.segmenter import LungSegmenter, segment_inputs
from pipeline.inference.sides import assign_sides, postprocess_sides
from tests.dicom import STUDY_UID, write_dicom_series
from transforms.errors import InputError
from transforms.functional import HU_MAX, HU_MIN, LEFT_LUNG, LUNA16_HU_MEAN, LUNA16_HU_STD, RIGHT_LUNG

REPO = Path(__file__).resolve().parents[3]
INFERENCE_CONFIG = REPO / "bundle" / "configs" / "inference.json"
GRID_MM = 2.5  # the bundle's vox_spacing: phantoms on this grid are resampled without interpolation
BODY_HU, LUNG_HU, NODULE_HU = -100, -850, 30
THRESHOLD_HU = -475.0  # the stub calls everything darker than this lung
SHAPE = (64, 48, 40)  # (x, y, z) voxels: 160 x 120 x 100 mm
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
FORMATS = (".mhd", ".mha", ".nrrd", ".nii", ".nii.gz")
RIGHT_CENTRE_LPS, LEFT_CENTRE_LPS = (-40.0, 0.0, 0.0), (40.0, 0.0, 0.0)  # LPS: the patient's right is -x
LUNG_RADII_MM = (28.0, 38.0, 36.0)
NODULE_RADIUS_MM = 6.0
TINY_CONFIG = {"network_def": {"_target_": "networks.VNet", "init_filters": 4, "dropout_prob": 0.0},
               "roi_size": [32, 32, 32], "sw_batch_size": 2, "sw_overlap": 0.25, "vox_spacing": GRID_MM}


class ThresholdNet(torch.nn.Module):
    """(N, 1, ...) normalised HU -> (N, 2, ...) logits: lung where HU < THRESHOLD_HU (the known truth)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hu = x * LUNA16_HU_STD + LUNA16_HU_MEAN
        return torch.cat([torch.zeros_like(hu), THRESHOLD_HU - hu], dim=1)


def phantom(spacing=(GRID_MM,) * 3, direction=IDENTITY, shape=SHAPE, nodule=True, debris=True):
    """(CT sitk.Image int16, truth labels (z, y, x) uint8: 1 right, 2 left) centred on the world origin."""
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    centre_index = (np.asarray(shape) - 1) / 2
    origin = -d @ (np.asarray(spacing) * centre_index)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape[::-1]), indexing="ij")
    world = np.einsum("ij,j...->i...", d, np.stack([x * spacing[0], y * spacing[1], z * spacing[2]])) + origin[:, None,
                                                                                                            None, None]
    ct = np.full(x.shape, BODY_HU, np.int16)
    truth = np.zeros(x.shape, np.uint8)
    for label, centre in ((RIGHT_LUNG, RIGHT_CENTRE_LPS), (LEFT_LUNG, LEFT_CENTRE_LPS)):
        inside = sum(((world[i] - centre[i]) / LUNG_RADII_MM[i]) ** 2 for i in range(3)) <= 1
        ct[inside], truth[inside] = LUNG_HU, label
    if nodule:  # enclosed in the right lung: a hole for the stub, filled by postprocessing
        ct[sum((world[i] - RIGHT_CENTRE_LPS[i]) ** 2 for i in range(3)) <= NODULE_RADIUS_MM**2] = NODULE_HU
    if debris:  # one dark voxel in the body, far from the lungs: removed by postprocessing
        ct[1, 1, shape[0] // 2] = LUNG_HU
    image = sitk.GetImageFromArray(ct)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin(origin.tolist())
    image.SetDirection(direction)
    return image, truth


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def stub() -> LungSegmenter:
    return LungSegmenter(ThresholdNet(), device="cpu")


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """(state dict .pt, TorchScript .ts, [inference.json, overlay .json]) of a tiny random V-Net."""
    folder = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    net = VNet(init_filters=4, dropout_prob=0.0).eval()
    torch.save(net.state_dict(), folder / "model.pt")
    torch.jit.script(net).save(str(folder / "model.ts"))
    (folder / "config.json").write_text(json.dumps(TINY_CONFIG))
    return folder / "model.pt", folder / "model.ts", [INFERENCE_CONFIG, folder / "config.json"]


# ---------------------------------------------------------------- geometry and labels end to end


@pytest.mark.parametrize("suffix", FORMATS + ("dicom",))
def test_output_geometry_and_labels_per_format(stub, tmp_path, suffix):
    image, truth = phantom(direction=FLIPPED if suffix in (".mha", "dicom") else IDENTITY)
    source = write_dicom_series(image, tmp_path / "series1") if suffix == "dicom" else tmp_path / f"ct{suffix}"
    if suffix != "dicom":
        sitk.WriteImage(image, str(source))
    result = stub.segment_file(source, tmp_path / "out")
    assert result.status == "done", result.message
    expected = Path(output_paths(source, tmp_path / "out", "_lung")[0])
    assert expected.name == ("series1_lung.nii.gz" if suffix == "dicom" else f"ct_lung{suffix}")
    reference, mask = read_ct(source), sitk.ReadImage(str(expected))
    assert mask.GetSize() == reference.GetSize() and mask.GetPixelID() == sitk.sitkUInt8
    tol = 1e-4 if suffix in ("dicom", ".nii", ".nii.gz") else 1e-9  # NIfTI stores float32 geometry
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(mask, get)(), getattr(reference, get)(), atol=tol, err_msg=get)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), truth)  # sides, nodule filled, debris gone


def test_anisotropic_flipped_ct_is_close_to_truth(stub):
    image, truth = phantom(spacing=(1.25, 1.25, 2.0), direction=FLIPPED, shape=(128, 96, 50))
    labels = sitk.GetArrayFromImage(stub.segment(image).mask)
    for side in (RIGHT_LUNG, LEFT_LUNG):
        assert dice(labels == side, truth == side) > 0.95


def test_binary_labels_and_no_postprocess(tmp_path):
    image, truth = phantom()
    binary = sitk.GetArrayFromImage(LungSegmenter(ThresholdNet(), device="cpu", labels="binary").segment(image).mask)
    np.testing.assert_array_equal(binary, (truth > 0).astype(np.uint8))
    raw = sitk.GetArrayFromImage(LungSegmenter(ThresholdNet(), device="cpu", postprocess=False).segment(image).mask)
    assert (raw[truth == RIGHT_LUNG] == 0).sum() > 0  # the nodule stays a hole
    assert raw[1, 1, SHAPE[0] // 2] > 0  # the debris voxel stays


def test_preprocess_matches_monai_image_transforms(stub):
    """SimpleITK resampling onto the lazily computed grid == inference.json's chain run eagerly by MONAI.

    Same grid exactly; same values inside the scan. Grid points beyond the scan's extent (the outer layer) are
    padded by nearest voxel (SimpleITK) vs nearest edge plane (MONAI "border"): close, not equal.
    """
    from monai.transforms import Compose

    from pipeline.config import load_config
    from transforms import sitk_to_metatensor

    image, _ = phantom(spacing=(0.9, 1.1, 1.7), direction=FLIPPED, shape=(50, 40, 30))
    ours = stub.preprocess(image)
    chain = load_config(INFERENCE_CONFIG).get_parsed_content("preprocessing_transforms")
    assert [type(t).__name__ for t in chain[:2]] == ["LoadImaged", "EnsureChannelFirstd"]
    eager = Compose(chain[2:])({"image": sitk_to_metatensor(image)})["image"]
    assert ours.shape == eager.shape
    np.testing.assert_allclose(ours.affine.numpy(), eager.affine.numpy(), atol=1e-9)
    inner = (0, slice(1, -1), slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(ours.numpy()[inner], eager.numpy()[inner], atol=1e-3)
    assert ours.min() >= eager.min() - 1e-3 and ours.max() <= eager.max() + 1e-3


# ---------------------------------------------------------------- left / right and postprocessing


def two_boxes(shape=(30, 12, 12), bridge=False) -> np.ndarray:
    lung = np.zeros(shape, bool)
    lung[2:10, 2:10, 2:10] = lung[20:28, 2:10, 2:10] = True
    if bridge:
        lung[10:20, 5:6, 5:6] = True  # a 1-voxel-thick connection: separated by one erosion
    return lung


@pytest.mark.parametrize("x_sign, low_index_side", [(1.0, LEFT_LUNG), (-1.0, RIGHT_LUNG)])
@pytest.mark.parametrize("bridge, how", [(False, "components"), (True, "split by 1 erosion(s)")])
def test_assign_sides_by_world_position(x_sign, low_index_side, bridge, how):
    affine = np.diag([x_sign * GRID_MM, GRID_MM, GRID_MM, 1.0])  # RAS: larger world x = patient's right
    labels, found = assign_sides(two_boxes(bridge=bridge), affine)
    high_index_side = RIGHT_LUNG + LEFT_LUNG - low_index_side
    assert found == how
    assert (labels[2:10, 2:10, 2:10] == low_index_side).all() and (labels[20:28, 2:10, 2:10] == high_index_side).all()
    assert set(np.unique(labels[two_boxes(bridge=bridge)])) == {RIGHT_LUNG, LEFT_LUNG}  # every lung voxel labelled


def test_lungs_joined_at_the_front_with_a_piece_apart_are_split_at_the_body_midline():
    """A crop cuts one lung into a main part, joined to the other lung by a thin bridge, and a piece apart: the two
    largest components are then (both lungs, the piece). With the body's midline that pair straddles it and is
    refused; one erosion separates the lungs."""
    lung = two_boxes(shape=(36, 12, 12), bridge=True)
    lung[30:34, 2:10, 2:10] = True  # the piece: 256 voxels, a quarter of the joined blob (1034)
    affine = np.diag([-GRID_MM, GRID_MM, GRID_MM, 1.0])  # RAS: index 0 is the patient's right
    naive, _ = assign_sides(lung, affine)
    assert (naive[30:34, 2:10, 2:10] == LEFT_LUNG).all() and (naive[2:10, 2:10, 2:10] == RIGHT_LUNG).all()  # the piece vs rest
    midline = -15.0 * GRID_MM  # world x of index 15, between the boxes (x = -index * GRID_MM)
    labels, how = assign_sides(lung, affine, midline)
    assert how == "split by 1 erosion(s)"
    assert (labels[2:10, 2:10, 2:10] == RIGHT_LUNG).all() and (labels[20:28, 2:10, 2:10] == LEFT_LUNG).all()


def test_assign_sides_one_blob_uses_mid_sagittal_plane_and_empty():
    lung = np.zeros((20, 8, 8), bool)
    lung[2:18, 1:7, 1:7] = True  # a solid block does not fall apart by erosion
    labels, how = assign_sides(lung, np.diag([GRID_MM, GRID_MM, GRID_MM, 1.0]))
    assert how == "mid-sagittal plane"
    assert (labels[2:10][lung[2:10]] == LEFT_LUNG).all() and (labels[10:18][lung[10:18]] == RIGHT_LUNG).all()
    empty, how = assign_sides(np.zeros((4, 4, 4), bool), np.eye(4))
    assert how == "empty" and not empty.any()


def test_postprocess_keeps_largest_component_and_fills_only_enclosed_holes():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:12, 2:12, 2:12] = RIGHT_LUNG
    labels[6, 6, 6] = 0  # enclosed hole: filled
    labels[2:5, 5, 5] = 0  # cavity open to the outside (touches the face x = 2): kept
    labels[15:17, 15:17, 15:17] = RIGHT_LUNG  # debris of the same side: removed
    labels[14:19, 2:5, 2:5] = LEFT_LUNG
    out = postprocess_sides(labels.copy())
    assert out[6, 6, 6] == RIGHT_LUNG and (out[2:5, 5, 5] == 0).all()
    assert (out[15:17, 15:17, 15:17] == 0).all() and (out[14:19, 2:5, 2:5] == LEFT_LUNG).all()


def test_hole_filling_equals_monai_fill_holes():
    from monai.transforms import FillHoles

    rng = np.random.default_rng(0)
    labels = np.zeros((40, 30, 30), np.uint8)
    labels[3:18, 3:27, 3:27], labels[22:37, 3:27, 3:27] = RIGHT_LUNG, LEFT_LUNG
    labels[rng.random(labels.shape) < 0.03] = 0  # single-voxel holes, enclosed or open at the faces
    expected = np.asarray(FillHoles(applied_labels=[RIGHT_LUNG, LEFT_LUNG])(labels[None].copy()))[0]
    np.testing.assert_array_equal(postprocess_sides(labels.copy()), expected)


# ---------------------------------------------------------------- bad inputs


def bad_inputs(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, expected message fragment)."""
    good, _ = phantom(debris=False)
    cases = {}
    flat = sitk.Image(16, 16, sitk.sitkInt16) - 1000
    sitk.WriteImage(flat, str(folder / "flat.mha"))
    cases["2-D"] = (folder / "flat.mha", "expected a 3-D CT volume")
    positive = sitk.Cast(good + 1024, sitk.sitkUInt16)
    sitk.WriteImage(positive, str(folder / "positive.nii.gz"))
    cases["not HU"] = (folder / "positive.nii.gz", "not in Hounsfield units")
    thick = sitk.Image(good)
    thick.SetSpacing((GRID_MM, GRID_MM, 30.0))
    sitk.WriteImage(thick, str(folder / "thick.nrrd"))
    cases["absurd spacing"] = (folder / "thick.nrrd", "is not plausible")
    sheared = sitk.Image(good)
    sheared.SetDirection((1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(sheared, str(folder / "sheared.mha"))
    cases["non-orthogonal"] = (folder / "sheared.mha", "is not orthogonal")
    sitk.WriteImage(good, str(folder / "nospacing.mhd"))
    header = folder / "nospacing.mhd"
    header.write_text("".join(ln for ln in header.read_text().splitlines(True) if not ln.startswith("ElementSpacing")))
    cases["missing spacing"] = (header, "gives no voxel spacing")
    cases["missing file"] = (folder / "absent.mha", "does not exist")
    return cases


def test_bad_inputs_fail_one_line_each_and_the_run_continues(stub, tmp_path, caplog):
    cases = bad_inputs(tmp_path)
    good, _ = phantom()
    sitk.WriteImage(good, str(tmp_path / "good.mha"))
    inputs = [p for p, _ in cases.values()] + [tmp_path / "good.mha"]
    with caplog.at_level(logging.ERROR, logger="pipeline.inference.segmenter"):
        results = segment_inputs(inputs, tmp_path / "out", stub, progress=False)
    by_source = {Path(r.case).name: r for r in results}
    assert by_source["good.mha"].status == "done"
    errors = [r.getMessage() for r in caplog.records]
    for name, (path, fragment) in cases.items():
        result = by_source[path.name]
        assert result.status == "failed" and fragment in result.message and path.name in result.message, name
        assert "\n" not in result.message
        assert sum(fragment in line for line in errors) == 1, name
    assert all(len(line.splitlines()) == 1 for line in errors)


def test_check_image_accepts_a_ct_and_names_the_input():
    good, _ = phantom()
    check_image(good, "ok")
    with pytest.raises(InputError, match=r"^'nothu': no negative voxel"):
        check_image(sitk.Cast(good + 1000, sitk.sitkUInt16), "nothu")


# ---------------------------------------------------------------- outputs: CSV, QC picture, rerun


def test_stats_csv_and_qc_png(stub, tmp_path):
    image, _ = phantom()
    for name in ("a.mha", "b.mha"):
        sitk.WriteImage(image, str(tmp_path / name))
    results = segment_inputs([tmp_path / "a.mha", tmp_path / "b.mha"], tmp_path / "out", stub, progress=False)
    assert [r.status for r in results] == ["done", "done"]
    with open(tmp_path / "out" / STATS_CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [Path(r["input"]).name for r in rows] == ["a.mha", "b.mha"]
    mask = sitk.GetArrayFromImage(sitk.ReadImage(rows[0]["output"]))
    ct = sitk.GetArrayFromImage(image).astype(np.float64)
    voxel_ml = GRID_MM**3 / 1000.0
    for side, key in ((RIGHT_LUNG, "right"), (LEFT_LUNG, "left")):
        assert float(rows[0][f"{key}_lung_ml"]) == pytest.approx((mask == side).sum() * voxel_ml, abs=1e-3)
        assert float(rows[0][f"mean_hu_{key}"]) == pytest.approx(ct[mask == side].mean(), abs=1e-3)
    assert float(rows[0]["total_lung_ml"]) == pytest.approx((mask > 0).sum() * voxel_ml, abs=1e-3)
    assert [float(rows[0][f"spacing_{a}_mm"]) for a in "xyz"] == [GRID_MM] * 3 and float(rows[0]["runtime_s"]) > 0
    png = imread(tmp_path / "out" / "a_qc.png")[..., :3]
    red = (png[..., 0] - png[..., 2] > 0.5).sum()  # right-lung outline; grey CT pixels have R == B
    blue = (png[..., 2] - png[..., 0] > 0.5).sum()  # left-lung outline
    assert red > 50 and blue > 50


def test_rerun_skips_and_overwrite_redoes(stub, tmp_path):
    image, _ = phantom()
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    out = tmp_path / "out"
    first = segment_inputs([tmp_path], out, stub, progress=False)
    mask = Path(first[0].output)
    stamp = mask.stat().st_mtime_ns
    assert [r.status for r in segment_inputs([tmp_path], out, stub, progress=False)] == ["skipped"]
    assert mask.stat().st_mtime_ns == stamp
    (out / "ct_qc.png").unlink()  # an incomplete earlier run is redone
    assert [r.status for r in segment_inputs([tmp_path], out, stub, progress=False)] == ["done"]
    assert [r.status for r in segment_inputs([tmp_path], out, stub, overwrite=True, progress=False)] == ["done"]
    with open(out / STATS_CSV, newline="") as f:
        assert len(list(csv.DictReader(f))) == 1  # one row per input, replaced on reruns
    assert sorted(p.name for p in out.iterdir()) == ["ct_lung.nii.gz", "ct_qc.png", STATS_CSV, "report.html"]  # no temporaries


def test_same_output_name_from_two_folders_fails_the_second(stub, tmp_path):
    image, _ = phantom()
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        sitk.WriteImage(image, str(tmp_path / sub / "ct.mha"))
    results = segment_inputs([tmp_path / "x", tmp_path / "y"], tmp_path / "out", stub, progress=False)
    assert [r.status for r in results] == ["done", "failed"] and "already taken" in results[1].message


# ---------------------------------------------------------------- models, settings, arguments


def test_state_dict_torchscript_and_bf16_agree(tiny_files):
    pt, ts, config = tiny_files
    image, _ = phantom(shape=(32, 32, 32), debris=False)  # one 32^3 window: the content does not matter here
    masks = {}
    for name, model, amp in (("pt", pt, False), ("ts", ts, False), ("bf16", pt, True)):
        seg = LungSegmenter(model, config, device="cpu", postprocess=False, labels="binary", amp=amp)
        masks[name] = sitk.GetArrayFromImage(seg.segment(image).mask)
    np.testing.assert_array_equal(masks["pt"], masks["ts"])
    assert (masks["pt"] == masks["bf16"]).mean() > 0.99  # random weights: decisions near 0 may flip


def test_settings_from_configs(tiny_files):
    """Window, overlap, grid and HU normalisation come from the config (and its overlays), nowhere else."""
    default = LungSegmenter(ThresholdNet(), device="cpu")
    assert tuple(default.inferer.roi_size) == (80, 80, 64) and default.inferer.overlap == 0.0
    spacing = next(t for t in default._spatial if type(t).__name__ == "Spacingd").spacing_transform.pixdim
    assert np.allclose(spacing, GRID_MM)
    normalise = next(t for t in default._intensity if type(t).__name__ == "NormalizeHUd").normalizer
    assert (normalise.hu_min, normalise.hu_max, normalise.mean, normalise.std) == (HU_MIN, HU_MAX, LUNA16_HU_MEAN,
                                                                                   LUNA16_HU_STD)
    tiny = LungSegmenter(ThresholdNet(), tiny_files[2], device="cpu", batch_size=3)
    assert tuple(tiny.inferer.roi_size) == (32, 32, 32) and tiny.inferer.overlap == 0.25
    assert tiny.inferer.sw_batch_size == 3  # the argument overrides the config's 2


@pytest.mark.parametrize("kwargs, fragment", [
    ({"labels": "lobes"}, "labels 'lobes'"),
    ({"batch_size": 0}, "batch size 0"),
    ({"overlap": 1.0}, "overlap 1.0"),
    ({"model": "absent.pt"}, "nothing is downloaded"),
    ({"config": "absent.json"}, "config 'absent.json' does not exist"),
])
def test_bad_arguments(kwargs, fragment, tiny_files):
    kwargs = {"model": tiny_files[0], "config": tiny_files[2], "device": "cpu", **kwargs}
    with pytest.raises(InputError, match=fragment):
        LungSegmenter(**kwargs)


def test_weights_that_do_not_fit_network_def(tiny_files, tmp_path):
    config = tmp_path / "wide.json"
    config.write_text(json.dumps({**TINY_CONFIG, "network_def": {**TINY_CONFIG["network_def"], "init_filters": 8}}))
    with pytest.raises(InputError, match="does not fit network_def"):
        LungSegmenter(tiny_files[0], [INFERENCE_CONFIG, config], device="cpu")


def test_lung_stats_empty_lung_gives_nan_mean():
    image, _ = phantom()
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    stats = lung_stats(image, empty)
    assert stats.total_ml == 0 and np.isnan(stats.mean_hu_right) and np.isnan(stats.mean_hu_left)


# ---------------------------------------------------------------- command line


def cli_args(tiny_files, out: Path, *inputs: Path) -> list[str]:
    return ["segment", *map(str, inputs), "--out", str(out), "--model", str(tiny_files[0]), "--config",
            *map(str, tiny_files[2]), "--device", "cpu", "--no-progress"]


def test_cli_in_process_exit_codes(tiny_files, tmp_path, capsys):
    image, _ = phantom(shape=(32, 32, 32))
    sitk.WriteImage(image, str(tmp_path / "ct.mha"))
    assert cli.main(cli_args(tiny_files, tmp_path / "out", tmp_path / "ct.mha")) == 0
    assert "segment: 1 done, 0 skipped, 0 failed" in capsys.readouterr().out
    assert cli.main(cli_args(tiny_files, tmp_path / "out", tmp_path / "ct.mha")) == 0
    assert "0 done, 1 skipped" in capsys.readouterr().out
    assert cli.main(cli_args(tiny_files, tmp_path / "out", tmp_path / "ct.mha", tmp_path / "absent.nrrd")) == 1
    assert cli.main(cli_args(tiny_files, tmp_path / "out", tmp_path / "ct.mha") + ["--batch-size", "0"]) == 2
    assert cli.main(cli_args(tiny_files, tmp_path / "o", tmp_path / "ct.mha") + ["--model", "none.pt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: model 'none.pt' does not exist") and "nothing is downloaded" in err[-1]
    assert not (tmp_path / "o").exists()  # nothing written when the model cannot be loaded


def test_cli_subprocess_end_to_end(tiny_files, tmp_path):
    image, _ = phantom(shape=(32, 32, 32))
    sitk.WriteImage(image, str(tmp_path / "ct.nrrd"))
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(tmp_path / "slice.mha"))
    run = subprocess.run([sys.executable, "-m", "pipeline", *cli_args(tiny_files, tmp_path / "out", tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1, run.stderr
    assert [ln for ln in run.stderr.splitlines() if ln.startswith("failed:")] == [
        f"failed: '{tmp_path / 'slice.mha'}': expected a 3-D CT volume, got a single slice (a 2-D image of size (8, 8)):"
        " segment the whole series (the folder of all its slices); besides, the intensities do not look like a CT"
        " in Hounsfield units (0 % of voxels at air or lung values (-1100..-500 HU) and 1e+02 % at soft tissue"
        " (-200..300 HU); percentiles 1/50/99: 0/0/0): an MR, or a CT stored without its rescale (HU = value x"
        " RescaleSlope + RescaleIntercept) or display-windowed"]
    assert "segment: 1 done, 0 skipped, 1 failed" in run.stdout
    mask = sitk.ReadImage(str(tmp_path / "out" / "ct_lung.nrrd"))
    assert mask.GetSize() == image.GetSize() and (tmp_path / "out" / "ct_qc.png").is_file()


@pytest.mark.parametrize("value, words", [({"vox_spacing": "abc"}, "'preprocessing' cannot be built from the config"),
                                          ({"sw_overlap": 1.5}, "sliding window overlap 1.5"),
                                          ({"sw_batch_size": 0}, "and batch 0")])
def test_bad_config_value_is_one_input_error(tmp_path, value, words):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(value))
    with pytest.raises(InputError, match=re.escape(words)) as info:
        LungSegmenter(ThresholdNet(), [INFERENCE_CONFIG, bad], device="cpu")
    assert "\n" not in str(info.value) and str(bad) in str(info.value)


def test_mask_name_and_device_come_from_the_config(tmp_path):
    overlay = tmp_path / "names.json"
    overlay.write_text(json.dumps({"output_postfix": "_lungs", "device_name": "cpu", "amp": True}))
    segmenter = LungSegmenter(ThresholdNet(), [INFERENCE_CONFIG, overlay])
    assert segmenter.device.type == "cpu" and segmenter.amp is True
    image, _ = phantom(shape=(32, 32, 32))
    sitk.WriteImage(image, str(tmp_path / "ct.mha"))
    result = segmenter.segment_file(tmp_path / "ct.mha", tmp_path / "out")
    assert result.status == "done" and Path(result.output).name == "ct_lungs.mha"
    assert LungSegmenter(ThresholdNet(), [INFERENCE_CONFIG, overlay], device="cpu", amp=False).amp is False


def test_a_folder_with_dicom_slices_also_yields_the_images_and_series_beside_them(tmp_path):
    image, _ = phantom(shape=(16, 16, 4))
    write_dicom_series(image, tmp_path / "scans")  # the slices of one series directly in scans/
    sitk.WriteImage(image, str(tmp_path / "scans" / "ct.nii.gz"))
    write_dicom_series(image, tmp_path / "scans" / "series2", series_uid=STUDY_UID + ".2")
    assert find_ct_inputs(tmp_path / "scans") == [str(tmp_path / "scans"), str(tmp_path / "scans" / "ct.nii.gz"),
                                                  str(tmp_path / "scans" / "series2")]
