"""Pure functions: LUNA16 label mapping (left/right by world position), HU normalisation, octant slices."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from transforms import (
    HU_MAX,
    HU_MIN,
    LEFT_LUNG,
    LUNA16_HU_MEAN,
    LUNA16_HU_STD,
    LUNA16_LABELS,
    RIGHT_LUNG,
    InputError,
    denormalize_hu,
    map_luna16_labels,
    normalize_hu,
    octant_slices,
    read_image,
)

SHAPE = (8, 4, 3)  # (X, Y, Z)


def luna16_mask(low_x_label: int = 3, high_x_label: int = 4) -> np.ndarray:
    """(X, Y, Z) mask: one label in low x indices, another in high x indices, trachea (5) in the middle."""
    mask = np.zeros(SHAPE, dtype=np.int16)
    mask[0:3, 1:3, :] = low_x_label
    mask[5:8, 1:3, :] = high_x_label
    mask[4, 2, 1:] = 5
    return mask


def world_right_label(mask_xyz: np.ndarray, direction, origin=(10.0, -4.0, 2.0), spacing=(0.7, 0.7, 2.5)) -> int:
    """Ground truth straight from SimpleITK (LPS): the lung label whose centroid has the SMALLER LPS x is right."""
    image = sitk.GetImageFromArray(mask_xyz.T)
    image.SetDirection(direction)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    xs = {}
    for label in (3, 4):
        centroid = np.argwhere(mask_xyz == label).mean(axis=0)
        xs[label] = image.TransformContinuousIndexToPhysicalPoint(centroid.tolist())[0]
    return min(xs, key=xs.get)


# --- label mapping ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, expected",
    [("binary", {0: 0, 3: 1, 4: 1, 5: 1}), ("lungs", {0: 0, 3: 1, 4: 1, 5: 0})],
)
@pytest.mark.parametrize("container", [np.asarray, torch.as_tensor, lambda a: MetaTensor(torch.as_tensor(a))])
def test_binary_and_lungs_modes(mode, expected, container):
    mask = luna16_mask()[None]
    out = map_luna16_labels(container(mask), mode)
    assert type(out) is type(container(mask))
    result = np.asarray(out)
    assert result.dtype == np.uint8 and result.shape == mask.shape
    for source, target in expected.items():
        assert np.all(result[mask == source] == target)


def test_binary_mode_accepts_zero_one_masks_and_float_labels():
    binary = (luna16_mask() > 0).astype(np.uint8)
    np.testing.assert_array_equal(map_luna16_labels(binary, "binary"), binary)
    as_float = luna16_mask().astype(np.float32)  # e.g. after Spacingd(mode="nearest")
    np.testing.assert_array_equal(map_luna16_labels(as_float, "binary"), binary)


@pytest.mark.parametrize(
    "direction, right_label",
    [
        ((1, 0, 0, 0, 1, 0, 0, 0, 1), 3),  # LPS +x = patient's left: high-x label 4 is the LEFT lung
        ((-1, 0, 0, 0, 1, 0, 0, 0, 1), 4),  # flipped header: the same array, now label 4 is the RIGHT lung
    ],
)
def test_left_right_follows_world_position_not_label_number(tmp_path, direction, right_label):
    mask = luna16_mask()
    assert world_right_label(mask, direction) == right_label
    image = sitk.GetImageFromArray(mask.T)
    image.SetDirection(direction)
    image.SetOrigin((10.0, -4.0, 2.0))
    image.SetSpacing((0.7, 0.7, 2.5))
    sitk.WriteImage(image, str(tmp_path / "mask.mhd"), True)
    out = map_luna16_labels(read_image(tmp_path / "mask.mhd"), "left_right")
    left_label = 7 - right_label
    loaded = mask[None]
    assert out.dtype == torch.uint8
    assert torch.all(out[torch.as_tensor(loaded == right_label)] == RIGHT_LUNG)
    assert torch.all(out[torch.as_tensor(loaded == left_label)] == LEFT_LUNG)
    assert torch.all(out[torch.as_tensor(loaded == 5)] == 0)  # trachea is not lung in left_right mode
    assert out.meta["filename_or_obj"] == str(tmp_path / "mask.mhd")


def test_left_right_with_explicit_ras_affine_and_lps_meta():
    mask = luna16_mask()
    ras_identity = np.eye(4)  # RAS +x = patient's right: high-x label (4) is the right lung
    out = map_luna16_labels(mask, "left_right", affine=ras_identity)
    assert np.all(out[mask == 4] == RIGHT_LUNG) and np.all(out[mask == 3] == LEFT_LUNG)
    lps = MetaTensor(torch.as_tensor(mask), affine=torch.eye(4, dtype=torch.float64), meta={"space": "LPS"})
    out = map_luna16_labels(lps, "left_right")  # LPS identity: high x = patient's left
    assert torch.all(out[lps.as_tensor() == 4] == LEFT_LUNG)


def test_left_right_single_lung_uses_field_of_view_centre():
    mask = luna16_mask()
    mask[mask == 3] = 0
    with pytest.warns(UserWarning, match="only lung label 4"):
        out = map_luna16_labels(mask, "left_right", affine=np.eye(4))
    assert np.all(out[mask == 4] == RIGHT_LUNG)


def test_left_right_needs_an_affine():
    with pytest.raises(InputError, match="needs an affine"):
        map_luna16_labels(luna16_mask(), "left_right")


@pytest.mark.parametrize(
    "mode, bad_value",
    [(m, v) for m in ("binary", "lungs", "left_right") for v in (1, 2, 6, 255, -1) if (m, v) != ("binary", 1)],
)
def test_unexpected_labels_name_the_file_and_values(mode, bad_value):
    mask = luna16_mask()
    mask[0, 0, 0] = bad_value
    img = MetaTensor(torch.as_tensor(mask), meta={"filename_or_obj": "/data/seg-lungs-LUNA16/case42.mhd"})
    with pytest.raises(InputError, match=rf"case42\.mhd.*\[{bad_value}\]"):
        map_luna16_labels(img, mode)


def test_unexpected_labels_mixed_binary_and_source_argument():
    mask = luna16_mask()
    mask[0, 0, 0] = 1
    with pytest.raises(InputError, match=r"my_mask\.nii\.gz: unexpected label values \[1\]"):
        map_luna16_labels(mask, "binary", source="my_mask.nii.gz")
    with pytest.raises(InputError, match=r"unexpected label values \[2\.5\]"):
        map_luna16_labels(np.full(SHAPE, 2.5), "binary")


def test_bad_mode():
    with pytest.raises(InputError, match="mode 'both'"):
        map_luna16_labels(luna16_mask(), "both")


def test_label_constants_are_the_community_convention():
    assert LUNA16_LABELS == (0, 3, 4, 5)
    assert (RIGHT_LUNG, LEFT_LUNG) == (1, 2)


# --- HU normalisation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "hu, expected",
    [
        (-642.794, 0.0),
        (-183.282, 1.0),
        (-1000.0, -0.7773595),
        (-3024.0, -0.7773595),
        (400.0, 2.2693510),
        (3071.0, 2.2693510),
    ],
)
def test_normalize_hu_reference_values(hu, expected):
    out = normalize_hu(np.array([hu], dtype=np.float64))
    assert out.dtype == np.float32
    assert out[0] == pytest.approx(expected, abs=1e-6)


def test_normalize_hu_containers_and_meta():
    affine = torch.diag(torch.tensor([2.0, 2, 2, 1]))
    img = MetaTensor(torch.tensor([[-2000, 0, 500]], dtype=torch.int16), affine=affine)
    out = normalize_hu(img)
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32
    torch.testing.assert_close(out.affine, img.affine)
    expected = (torch.tensor([[HU_MIN, 0.0, HU_MAX]]) - LUNA16_HU_MEAN) / LUNA16_HU_STD
    torch.testing.assert_close(out.as_tensor(), expected)


def test_denormalize_round_trip_inside_window():
    hu = np.linspace(HU_MIN, HU_MAX, 57)
    np.testing.assert_allclose(denormalize_hu(normalize_hu(hu)), hu, atol=1e-3)
    outside = np.array([-3024.0, 2000.0])
    np.testing.assert_allclose(denormalize_hu(normalize_hu(outside)), [HU_MIN, HU_MAX], atol=1e-3)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"hu_min": 400.0, "hu_max": -1000.0}, "hu_min"), ({"std": 0.0}, "std"), ({"std": -1.0}, "std")],
)
def test_normalize_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        normalize_hu(np.zeros(3), **kwargs)


def test_denormalize_bad_std():
    with pytest.raises(InputError, match="std"):
        denormalize_hu(np.zeros(3), std=0.0)


# --- octants ---------------------------------------------------------------------------------------------------------


def test_octant_slices_order_and_coverage():
    slices = octant_slices((4, 6, 8))
    assert len(slices) == 8
    assert slices[0] == (slice(0, 2), slice(0, 3), slice(0, 4))
    assert slices[1] == (slice(0, 2), slice(0, 3), slice(4, 8))  # z varies fastest (C order over x, y, z)
    assert slices[4] == (slice(2, 4), slice(0, 3), slice(0, 4))
    cover = np.zeros((4, 6, 8), dtype=int)
    for s in slices:
        cover[s] += 1
    assert np.all(cover == 1)


@pytest.mark.parametrize("split, n", [((1, 1, 1), 1), ((2, 1, 1), 2), ((2, 2, 2), 8), ((1, 3, 2), 6)])
def test_octant_slices_counts(split, n):
    assert len(octant_slices((4, 6, 8), split)) == n


@pytest.mark.parametrize(
    "shape, split, match",
    [((5, 6, 8), (2, 2, 2), r"\(5, 6, 8\).*divisible"), ((4, 6, 8), (2, 2), "one positive count"),
     ((4, 6, 8), (0, 2, 2), "one positive count")],
)
def test_octant_slices_errors(shape, split, match):
    with pytest.raises(ValueError, match=match):
        octant_slices(shape, split)
