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
