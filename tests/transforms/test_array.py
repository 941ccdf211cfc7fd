"""Array transforms: LungMask, NormalizeHU/DenormalizeHU, CropOrPad (+ inverse), Octants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from transforms import (
    CropOrPad,
    DenormalizeHU,
    InputError,
    LungMask,
    NormalizeHU,
    Octants,
)

AFFINE = torch.tensor(
    [[0.0, -2.0, 0.0, 40.0], [1.5, 0.0, 0.0, -20.0], [0.0, 0.0, -2.5, 7.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64
)


def ct(shape=(1, 6, 5, 4), low=-3024) -> MetaTensor:
    data = torch.arange(int(np.prod(shape)), dtype=torch.int16).reshape(shape) * 3 - 200
    data.view(-1)[7] = low
    return MetaTensor(data, affine=AFFINE.clone(), meta={"filename_or_obj": "ct.mhd"})


def world(affine: torch.Tensor, index) -> torch.Tensor:
    return (affine @ torch.tensor([*index, 1.0], dtype=torch.float64))[:3]


def reference_crop_or_pad(vol: np.ndarray, target, fill) -> np.ndarray:
    """The reference's per-axis rule: offset = int(difference / 2) for both pad and crop."""
    out = vol
    for axis, size in enumerate(target):
        have = out.shape[axis]
        if have > size:
            start = int((have - size) / 2)
            out = np.take(out, range(start, start + size), axis=axis)
        elif have < size:
            shape = list(out.shape)
            shape[axis] = size
            padded = np.full(shape, fill, dtype=out.dtype)
            index = [slice(None)] * out.ndim
            offset = int((size - have) / 2)
            index[axis] = slice(offset, offset + have)
            padded[tuple(index)] = out
            out = padded
    return out


# --- LungMask / NormalizeHU ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, expected", [("binary", [0, 1, 1, 1]), ("lungs", [0, 1, 1, 0])])
def test_lungmask_modes(mode, expected):
    mask = MetaTensor(torch.tensor([[[[0, 3, 4, 5]]]], dtype=torch.float32), affine=AFFINE)
    out = LungMask(mode)(mask)
    assert out.dtype == torch.uint8 and out.shape == mask.shape
    assert out.flatten().tolist() == expected
    torch.testing.assert_close(out.affine, AFFINE)


def test_lungmask_left_right_uses_metatensor_affine():
    mask = torch.zeros(1, 6, 2, 2)
    mask[0, :2], mask[0, 4:] = 3, 4
    affine = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64))  # RAS x decreases with index x
    out = LungMask("left_right")(MetaTensor(mask, affine=affine))
    assert out[0, 0, 0, 0] == 1 and out[0, 5, 0, 0] == 2  # label 3 at larger RAS x: right lung


def test_lungmask_bad_mode_at_construction():
    with pytest.raises(InputError, match="expected one of"):
        LungMask("left-right")


def test_lungmask_error_names_source():
    with pytest.raises(InputError, match=r"mask_07\.nrrd.*\[7\]"):
        LungMask()(np.full((1, 2, 2, 2), 7), source="mask_07.nrrd")


def test_normalize_and_denormalize_classes():
    img = ct()
    out = NormalizeHU()(img)
    assert out.dtype == torch.float32 and out.shape == img.shape
    assert float(out.min()) == pytest.approx(-0.7773595, abs=1e-6)
    torch.testing.assert_close(out.affine, AFFINE)
    back = DenormalizeHU()(out)
    torch.testing.assert_close(back.as_tensor(), img.as_tensor().float().clamp(-1000, 400), atol=1e-3, rtol=0)
    custom = NormalizeHU(hu_min=-100.0, hu_max=100.0, mean=0.0, std=100.0)(torch.tensor([-500.0, 50.0, 500.0]))
    torch.testing.assert_close(custom, torch.tensor([-1.0, 0.5, 1.0]))


@pytest.mark.parametrize("cls, kwargs", [(NormalizeHU, {"std": 0}), (NormalizeHU, {"hu_min": 5, "hu_max": 5}),
                                         (DenormalizeHU, {"std": -2})])
def test_normalize_bad_arguments_at_construction(cls, kwargs):
    with pytest.raises(InputError):
        cls(**kwargs)


# --- CropOrPad -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fill, expected_fill", [("min", -3024), (-1000, -1000), (7.0, 7)])
def test_crop_or_pad_fill(fill, expected_fill):
    img = ct()
    out = CropOrPad((8, 3, 6), fill=fill)(img)
    assert out.shape == (1, 8, 3, 6) and out.dtype == torch.int16
    assert out[0, 0].eq(expected_fill).all() and out[0, :, :, 0].eq(expected_fill).all()  # padded x and z borders
    inner = out[0, 1:7, :, 1:5]
    torch.testing.assert_close(inner.as_tensor(), img[0, :, 1:4, :].as_tensor())


def test_crop_or_pad_min_is_per_volume():
    pad = CropOrPad((8, 8, 8))
    assert pad(ct(low=-3024)).min() == -3024 and pad(ct(low=-1024)).min() == -1024
    assert pad(ct(low=-1024))[0, 0, 0, 0] == -1024


def test_crop_or_pad_inverse_restores_shape_and_affine():
    img = ct()
    transform = CropOrPad((8, 3, 6))
    out = transform(img)
    # the affine follows the data: world position of a kept voxel is unchanged (x padded by 1, y cropped by 1)
    torch.testing.assert_close(world(out.affine, (1, 0, 1)), world(img.affine, (0, 1, 0)))
    back = transform.inverse(out)
    assert back.shape == img.shape
    torch.testing.assert_close(back.affine, img.affine)
    torch.testing.assert_close(back[:, :, 1:4].as_tensor(), img[:, :, 1:4].as_tensor())  # cropped rows come back 0
    assert not back.applied_operations


@pytest.mark.parametrize(
    "size, target",
    [(4, 8), (5, 8), (4, 7), (5, 6), (11, 4), (11, 5), (9, 4), (10, 4), (7, 7)],
)
def test_crop_or_pad_centring_matches_reference(size, target):
    vol = np.arange(size, dtype=np.float32).reshape(1, size, 1, 1) + 1
    ours = CropOrPad((target, 1, 1), fill=0)(torch.as_tensor(vol))
    np.testing.assert_array_equal(np.asarray(ours), reference_crop_or_pad(vol[0], (target, 1, 1), 0)[None])


@pytest.mark.parametrize("size, target", [(10, 5), (8, 3), (12, 7)])
def test_crop_or_pad_even_to_odd_crop_starts_one_later_than_reference(size, target):
    vol = np.arange(size, dtype=np.float32).reshape(1, size, 1, 1)
    ours = np.asarray(CropOrPad((target, 1, 1))(torch.as_tensor(vol))).ravel()
    reference = reference_crop_or_pad(vol[0], (target, 1, 1), 0).ravel()
    np.testing.assert_array_equal(ours, reference + 1)


@pytest.mark.parametrize("fill", ["max", None, True, [0]])
def test_crop_or_pad_bad_fill(fill):
    with pytest.raises(InputError, match="fill"):
        CropOrPad((4, 4, 4), fill=fill)


# --- Octants ---------------------------------------------------------------------------------------------------------


def test_octants_count_shape_and_affine_shift():
    img = ct(shape=(1, 6, 4, 4))
    parts = Octants()(img)
    assert len(parts) == 8 and all(p.shape == (1, 3, 2, 2) for p in parts)
    # octant 5 = (ix, iy, iz) = (1, 0, 1): starts at voxel (3, 0, 2)
    torch.testing.assert_close(parts[5].as_tensor(), img[:, 3:6, 0:2, 2:4].as_tensor())
    torch.testing.assert_close(world(parts[5].affine, (0, 0, 0)), world(img.affine, (3, 0, 2)))
    torch.testing.assert_close(torch.cat([p.flatten() for p in parts]).sort().values, img.flatten().sort().values)


def test_octants_custom_split_and_divisibility_error():
    assert len(Octants(split=(3, 1, 2))(ct(shape=(2, 6, 4, 4)))) == 6
    with pytest.raises(ValueError, match=r"\(5, 4, 4\)"):
        Octants()(ct(shape=(1, 5, 4, 4)))
