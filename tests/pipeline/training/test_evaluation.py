"""Per-case metrics of the evaluate workflow and the inputs finder."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pipeline.data.inputs import find_ct_inputs
from pipeline.errors import expected_error_message
from pipeline.inference.outputs import output_path_like_input
from pipeline.training.metrics import case_metrics
from tests.dicom import write_dicom_series
from transforms.errors import InputError


def _onehot(lbl):
    return torch.stack([lbl == 0, lbl == 1]).float()


def test_case_metrics_values():
    y = torch.zeros(8, 8, 8, dtype=torch.long)
    y[2:6, 2:6, 2:6] = 1  # 64 voxels
    p = y.clone()
    p[2, 2:6, 2:6] = 0  # 16 false negatives
    m = case_metrics(_onehot(p), _onehot(y), spacing=(2.0, 2.0, 2.0), octant_split=(2, 2, 2), drop_empty=True)
    assert m["dice"] == pytest.approx(2 * 48 / (48 + 64))
    assert m["error_rate_pct"] == pytest.approx(100 * 16 / 512)
    assert m["error_rate_octants_pct"] == pytest.approx(100 * 16 / 512)  # every octant touches the cube
    assert m["true_volume_ml"] == pytest.approx(64 * 8 / 1000) and m["pred_volume_ml"] == pytest.approx(48 * 8 / 1000)
    assert m["hd95_mm"] == pytest.approx(2.0) and 0 < m["asd_mm"] < 2.0


def test_case_metrics_print_no_warning_and_keep_the_callers_filters():
    import warnings

    y = torch.zeros(8, 8, 8, dtype=torch.long)
    y[2:6, 2:6, 2:6] = 1
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        case_metrics(_onehot(y), _onehot(y), spacing=(2.0, 2.0, 2.0), octant_split=(2, 2, 2), drop_empty=True)
    assert [str(w.message) for w in seen] == []  # MONAI's own deprecated argument inside its HD/ASD is silenced
    assert warnings.filters == before


def test_find_ct_inputs_files_folders_and_dicom(tmp_path):
    img = sitk.GetImageFromArray(np.full((4, 8, 8), -1000, np.int16))
    sitk.WriteImage(img, str(tmp_path / "a.nii.gz"))
    (tmp_path / "sub").mkdir()
    sitk.WriteImage(img, str(tmp_path / "sub" / "b.mhd"))
    (tmp_path / "seg-lungs-LUNA16").mkdir()
    sitk.WriteImage(img, str(tmp_path / "seg-lungs-LUNA16" / "mask.mhd"))  # masks are skipped
    dicom = write_dicom_series(sitk.Cast(img[:, :, :3], sitk.sitkInt16), tmp_path / "series")
    found = find_ct_inputs(tmp_path)
    assert found == sorted([str(tmp_path / "a.nii.gz"), str(dicom), str(tmp_path / "sub" / "b.mhd")])
    with pytest.raises(InputError, match="does not exist"):
        find_ct_inputs(tmp_path / "nope")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a supported image file"):
        find_ct_inputs(tmp_path / "notes.txt")


@pytest.mark.parametrize(
    "source, expected",
    [("/d/case1.mhd", "out/case1_lung.mhd"), ("/d/case1.nii.gz", "out/case1_lung.nii.gz"),
     ("/d/series42/", "out/series42_lung.nii.gz"), ("/d/C.NRRD", "out/C_lung.NRRD")],
)
def test_outputs_keep_the_input_format(source, expected):
    assert output_path_like_input(source, "out", "_lung") == expected


def test_expected_error_message_walks_the_exception_chain():
    try:
        try:
            raise InputError("dataset 'x' is missing\nexpected layout ...")
        except InputError as e:
            raise RuntimeError("Failed to evaluate ConfigExpression") from e
    except RuntimeError as wrapped:
        assert expected_error_message(wrapped) == "dataset 'x' is missing expected layout ..."
    assert expected_error_message(KeyError("bug")) is None
    msg = expected_error_message(RuntimeError("Error(s) in loading state_dict for VNet:\n\tsize mismatch for a.weight: ..."))
    assert msg and msg.startswith("the checkpoint does not fit this network")


def _write(arr_zyx, path, spacing=(2.5, 2.5, 2.5), origin=(-50.0, -50.0, -25.0)):
    img = sitk.GetImageFromArray(arr_zyx)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


class _Engine:
    """What the evaluator hands its handlers: decollated outputs and batch, metrics, key metric name."""

    def __init__(self, outputs, batch):
        from types import SimpleNamespace

        self.state = SimpleNamespace(output=outputs, batch=batch, metrics={"val_error": 0.0}, key_metric_name="val_error")


def test_per_case_csv_reports_the_scan_geometry_beside_the_grid(tmp_path):
    """A known mask: a 2.5 mm scan of 40 x 40 x 20 voxels, evaluated on the 2.5 mm grid cropped to 32 x 40 x 20.

    The lung box covers file columns x 0..19; the crop keeps x 4..35, so a prediction perfect on the grid is
    perfect there (Dice 1, 50 mL) and, mapped back to the scan, misses columns 0..3: Dice 2*16/(16+20), 50 mL of
    62.5 mL."""
    import csv
    import json

    from monai.bundle import ConfigParser

    from pipeline.training.evaluation import CaseMetricsWriter
    from tests.bundle.conftest import CONFIGS

    ct = np.full((20, 40, 40), -1000, np.int16)
    mask = np.zeros((20, 40, 40), np.uint8)
    mask[5:15, 10:30, 0:20] = 3  # LUNA16's right lung value; 10 x 20 x 20 voxels
    ct[mask > 0] = -850
    _write(ct, tmp_path / "case.mhd")
    _write(mask, tmp_path / "case_mask.mhd")
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")])
    parser.update({"vox_spacing": 2.5, "spatial_size": [32, 40, 20], "output_dir": str(tmp_path / "eval")})
    item = parser.get_parsed_content("validate#preprocessing")(
        {"image": str(tmp_path / "case.mhd"), "label": str(tmp_path / "case_mask.mhd"), "uid": "case"})
    assert tuple(item["image"].shape) == (1, 32, 40, 20)
    grid_label = item["label"]
    pred = torch.cat([grid_label == 0, grid_label > 0]).float().as_tensor()  # perfect on the grid
    from monai.data import MetaTensor

    pred = MetaTensor(pred, affine=item["image"].affine)
    label = MetaTensor(torch.cat([grid_label == 0, grid_label > 0]).float(), meta=dict(grid_label.meta))
    writer = parser.get_parsed_content("evaluation#handlers#per_case_metrics")
    assert isinstance(writer, CaseMetricsWriter) and writer.inverter is not None
    writer.print_summary = False
    engine = _Engine([{"pred": pred, "label": label, "image": item["image"]}], [{"uid": "case"}])
    writer._iteration(engine)
    writer._write(engine)
    (row,) = list(csv.DictReader((tmp_path / "eval" / "metrics_per_case.csv").open()))
    voxel_ml = 2.5**3 / 1000
    assert float(row["dice"]) == 1.0 and float(row["pred_volume_ml"]) == pytest.approx(16 * 20 * 10 * voxel_ml)
    assert float(row["true_volume_ml"]) == pytest.approx(16 * 20 * 10 * voxel_ml)  # the grid holds the cropped lung
    assert float(row["orig_dice"]) == pytest.approx(2 * 16 / (16 + 20), rel=1e-5)
    assert float(row["orig_pred_volume_ml"]) == pytest.approx(16 * 20 * 10 * voxel_ml)
    assert float(row["orig_true_volume_ml"]) == pytest.approx(20 * 20 * 10 * voxel_ml)
    assert float(row["hd95_mm"]) == 0.0 and float(row["orig_hd95_mm"]) > 0  # the missed 4 columns are 10 mm deep
    # the inverted prediction lies where the file's lung is: the missed voxels are exactly columns x 0..3
    inverted = writer.inverter({"pred": pred, "image": item["image"]})["pred"]
    missed = (torch.as_tensor(mask).permute(2, 1, 0) > 0) & ~(inverted.argmax(0) > 0)
    assert missed.nonzero()[:, 0].unique().tolist() == [0, 1, 2, 3] and int(missed.sum()) == 4 * 20 * 10
    summary = json.loads((tmp_path / "eval" / "metrics_summary.json").read_text())
    assert summary["mean_orig_dice"] == pytest.approx(2 * 16 / 36, rel=1e-5) and summary["mean_dice"] == 1.0
