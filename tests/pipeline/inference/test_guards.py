"""The segment tool's guards: the body mask, the flags of lung_stats.csv, non-CT refusal, thin scans (a slab) and single slices.

The stub network (``ThresholdNet``) calls everything darker than -475 HU lung, as the quickstart's model did on
real scans: on a chest with air around it, it labels the outside air lung unless the body mask stops it.
"""

from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.data.checks import check_image, hounsfield_problem
from pipeline.data.inputs import find_ct_inputs
from pipeline.inference.guards import FLAGS, body_mask, case_flags
from pipeline.inference.segmenter import BODY_MARGIN_MM, SLAB_MM, LungSegmenter, as_slab, segment_inputs
from tests.pipeline.inference.test_segmenter import GRID_MM, ThresholdNet, phantom
from transforms.errors import InputError

AIR_HU, TABLE_HU, OUT_OF_FIELD = -1000, 200, -2048
BODY_SEMI_AXES_MM = (85.0, 60.0)  # x, y of the elliptic body; the lungs reach x +-68, y +-38 mm
SHAPE = (84, 68, 40)  # 210 x 170 x 100 mm on the 2.5 mm grid


def chest_in_air(shape=SHAPE):
    """(CT, truth (z, y, x), outside (z, y, x) bool): the stub phantom's lungs in an elliptic body of fat, air
    around it, a table 2.5 mm under the back (posterior = +y in LPS) and the scanner's out-of-field value in the
    corners."""
    image, truth = phantom(shape=shape, nodule=False, debris=False)
    ct = sitk.GetArrayFromImage(image)
    _, y, x = np.meshgrid(*(np.arange(n) for n in shape[::-1]), indexing="ij")
    origin = np.asarray(image.GetOrigin())
    wx, wy = origin[0] + x * GRID_MM, origin[1] + y * GRID_MM
    outside = (wx / BODY_SEMI_AXES_MM[0]) ** 2 + (wy / BODY_SEMI_AXES_MM[1]) ** 2 > 1
    ct[outside] = AIR_HU
    ct[outside & (wy > BODY_SEMI_AXES_MM[1] + 5) & (wy < BODY_SEMI_AXES_MM[1] + 15)] = TABLE_HU
    ct[(wx**2 + wy**2) > 100.0**2] = OUT_OF_FIELD
    out = sitk.GetImageFromArray(ct)
    out.CopyInformation(image)
    return out, truth, outside


def test_the_body_mask_holds_the_lungs_and_leaves_out_air_table_and_field_edge():
    image, truth, outside = chest_in_air()
    body = body_mask(sitk.GetArrayFromImage(image).astype(np.float32), axial_axis=0)
    assert body[truth > 0].all()  # both lungs are inside
    assert not body[outside].any()  # air, table and out-of-field all outside
    assert body[~outside].all()


def test_a_field_of_view_that_cuts_through_the_body_keeps_the_cut_lung_inside():
    image, truth, outside = chest_in_air()
    ct = sitk.GetArrayFromImage(image)[:, :, 16:]  # x from -48 mm: the cut runs through the right lung
    truth, outside = truth[:, :, 16:], outside[:, :, 16:]
    assert (truth[:, :, 0] == 1).any()  # the right lung touches the cut edge
    body = body_mask(ct.astype(np.float32), axial_axis=0)
    assert body[truth > 0].all() and not body[outside].any()


def test_the_segment_tool_never_calls_outside_air_lung_and_flags_it(tmp_path, caplog):
    image, truth, outside = chest_in_air()
    sitk.WriteImage(image, str(tmp_path / "chest.nii.gz"))
    raw = LungSegmenter(ThresholdNet(), device="cpu", postprocess=False)
    seg = raw.segment(tmp_path / "chest.nii.gz")
    mask = sitk.GetArrayFromImage(seg.mask)
    assert not mask[outside].any()  # not one voxel of air outside the body
    np.testing.assert_array_equal(mask > 0, truth > 0)
    assert [f.name for f in seg.flags] == ["outside_body"] and "mL outside the body" in seg.flags[0].message
    unguarded = LungSegmenter(ThresholdNet(), device="cpu", postprocess=False, body_guard=False).segment(image)
    assert (sitk.GetArrayFromImage(unguarded.mask)[outside] > 0).mean() > 0.5  # --no-body-mask: outside air kept
    assert "outside_body" not in [f.name for f in unguarded.flags]
    # through the batch tool: the flags column and one warning line per flag
    with caplog.at_level(logging.WARNING, logger="pipeline.inference.segmenter"):
        (result,) = segment_inputs([tmp_path / "chest.nii.gz"], tmp_path / "out", raw, progress=False)
    assert result.status == "done"
    (row,) = list(csv.DictReader((tmp_path / "out" / "lung_stats.csv").open()))
    assert row["flags"] == "outside_body"
    assert [r.message.split(": ")[1] for r in caplog.records if "chest.nii.gz" in r.message] == ["outside_body"]


@pytest.mark.parametrize("case, expected", [
    (dict(right_ml=3000, left_ml=2500, extent_mm=300), []),
    (dict(right_ml=3000, left_ml=2500, extent_mm=300, outside_ml=480), ["outside_body"]),
    (dict(right_ml=3000, left_ml=2500, extent_mm=300, outside_ml=2), []),  # edge voxels: removed, not flagged
    (dict(right_ml=0, left_ml=0, extent_mm=300), ["no_lung"]),
    (dict(right_ml=400, left_ml=350, extent_mm=300), ["implausible_volume"]),
    (dict(right_ml=6000, left_ml=5000, extent_mm=300), ["implausible_volume"]),
    (dict(right_ml=2600, left_ml=2400, extent_mm=120), ["implausible_volume"]),  # 12 cm hold at most ~4.3 L
    (dict(right_ml=3000, left_ml=400, extent_mm=300), ["unbalanced"]),
    (dict(right_ml=300, left_ml=250, extent_mm=60), ["thin_scan"]),
    (dict(right_ml=0, left_ml=0, extent_mm=60, outside_ml=20), ["outside_body", "no_lung", "thin_scan"]),
])
def test_each_flag_and_its_warning(case, expected):
    flags = case_flags(**case)
    assert [f.name for f in flags] == expected and all(f.name in FLAGS and f.message for f in flags)


def _mr_like(offset: float) -> sitk.Image:
    """A smooth MR-like volume (tissue contrast in arbitrary units, 0..~1500), shifted by ``offset``."""
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (40, 64, 64)), indexing="ij")
    values = 600 + 500 * np.sin(3 * x) * np.cos(2 * y) + 300 * z + rng.normal(0, 30, x.shape)
    values[(x**2 + y**2) > 0.9] = 0  # background
    image = sitk.GetImageFromArray((np.clip(values, 0, None) + offset).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 3.0))
    return image


def test_an_mr_is_refused_even_where_its_values_go_negative_unless_forced(tmp_path, capsys):
    positive, shifted = _mr_like(0.0), _mr_like(-400.0)
    assert sitk.GetArrayViewFromImage(shifted).min() < -300  # negative values: the old single-value check passed it
    with pytest.raises(InputError, match=r"'mr': no negative voxel"):
        check_image(positive, "mr")
    with pytest.raises(InputError, match=r"'mr': the intensities do not look like a CT in Hounsfield units .*--force"):
        check_image(shifted, "mr")
    check_image(shifted, "mr", hounsfield=False)  # --force
    image, _, _ = chest_in_air()
    assert hounsfield_problem(image) is None
    # the command: one line, exit 1, nothing written for it; --force segments it
    sitk.WriteImage(shifted, str(tmp_path / "mr.nii.gz"))
    (result,) = segment_inputs([tmp_path / "mr.nii.gz"], tmp_path / "out", LungSegmenter(ThresholdNet(), device="cpu"),
                               progress=False)
    assert result.status == "failed" and "do not look like a CT" in result.message and "\n" not in result.message
    assert not (tmp_path / "out" / "mr_lung.nii.gz").exists()
    forced = LungSegmenter(ThresholdNet(), device="cpu", force=True).segment(tmp_path / "mr.nii.gz")
    assert forced.mask.GetSize() == shifted.GetSize()


def test_a_few_slices_are_segmented_as_a_slab_and_the_mask_keeps_only_them(tmp_path):
    image, truth = phantom(shape=(64, 48, 4))  # 4 slices of 2.5 mm: 10 mm head to foot
    slab = as_slab(image)
    assert slab.GetSize()[2] * slab.GetSpacing()[2] >= SLAB_MM and slab.GetSpacing() == image.GetSpacing()
    ct, slab_ct = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(slab)
    first = round(slab.TransformPhysicalPointToContinuousIndex(image.GetOrigin())[2])
    np.testing.assert_array_equal(slab_ct[first:first + 4], ct)  # the scan's own slices, where they were
    assert (slab_ct[:first] == ct[0]).all() and (slab_ct[first + 4:] == ct[-1]).all()  # repeated beyond them

    seg = LungSegmenter(ThresholdNet(), device="cpu").segment(image)
    mask = sitk.GetArrayFromImage(seg.mask)
    assert seg.mask.GetSize() == image.GetSize() and seg.mask.GetOrigin() == image.GetOrigin()
    for side in (1, 2):  # 1 right, 2 left: each lung found in every slice, on its side
        found, true = mask == side, truth == side
        assert 2 * (found & true).sum() / (found.sum() + true.sum()) > 0.95 and found.any(axis=(1, 2)).all()
    assert "thin_scan" in [f.name for f in seg.flags] and any("slab" in n for n in seg.notes)
    thick_enough, _ = phantom(shape=(64, 48, 12))  # 30 mm: segmented as it is, flagged as a thin scan
    seg = LungSegmenter(ThresholdNet(), device="cpu").segment(thick_enough)
    assert "thin_scan" in [f.name for f in seg.flags] and not any("slab" in n for n in seg.notes)


def test_single_dicom_slices_are_read_and_refused_with_one_line(tmp_path):
    image, _ = phantom(shape=(64, 48, 4))
    one = sitk.Cast(image[:, :, 1:2], sitk.sitkInt16)
    sitk.WriteImage(one, str(tmp_path / "ct_slice.dcm"))
    mr = sitk.Cast(sitk.Abs(sitk.Cast(one, sitk.sitkFloat32)) * 0.3 + 40, sitk.sitkInt16)  # positive, MR-like units
    sitk.WriteImage(mr, str(tmp_path / "mr_slice.dcm"))
    results = segment_inputs(find_ct_inputs([tmp_path / "ct_slice.dcm", tmp_path / "mr_slice.dcm"]),
                             tmp_path / "out", LungSegmenter(ThresholdNet(), device="cpu"), progress=False)
    assert [r.status for r in results] == ["failed", "failed"]
    assert "got a single slice" in results[0].message and "the whole series" in results[0].message
    assert "got a single slice" in results[1].message and "do not look like a CT" in results[1].message
    assert all("\n" not in r.message for r in results)
    assert not list((tmp_path / "out").glob("*_lung*"))


def test_the_network_reads_the_body_and_a_margin_not_the_air_around_it():
    image, truth, _ = chest_in_air(shape=(120, 100, 40))  # 300 x 250 mm field, body 170 x 120 mm
    segmenter = LungSegmenter(ThresholdNet(), device="cpu")
    seen, predict = [], segmenter.predict
    segmenter.predict = lambda grid: (seen.append(tuple(grid.shape[1:])), predict(grid))[1]
    result = segmenter.segment(image)
    grid_shape = tuple(segmenter.preprocess(image).shape[1:])
    margin = 2 * int(np.ceil(BODY_MARGIN_MM / GRID_MM))
    # x and y: the body's 170 x 120 mm (68 x 48 voxels, give or take its edge voxel) plus the margin on each side
    assert len(seen) == 1 and abs(seen[0][0] - (68 + margin)) <= 2 and abs(seen[0][1] - (48 + margin)) <= 2
    assert seen[0][:2] < grid_shape[:2] and seen[0][2] == grid_shape[2]
    mask = sitk.GetArrayFromImage(result.mask) > 0
    assert 2 * (mask & (truth > 0)).sum() / (mask.sum() + (truth > 0).sum()) > 0.95
    unguarded = LungSegmenter(ThresholdNet(), device="cpu", body_guard=False)
    seen.clear()
    unguarded.predict = lambda grid: (seen.append(tuple(grid.shape[1:])), predict(grid))[1]
    unguarded.segment(image)
    assert seen == [grid_shape]  # --no-body-mask: the whole grid
