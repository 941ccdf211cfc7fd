"""Dictionary wrappers and the deterministic LUNA16 chain: Spacingd + CropOrPadd inverted by Invertd, Octantsd."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    Orientationd,
    SaveImaged,
    Spacingd,
)

from transforms import (
    CropOrPadd,
    DenormalizeHUd,
    InputError,
    LungMaskd,
    NormalizeHUd,
    Octantsd,
    SimpleITKReader,
    SimpleITKWriter,
)

KEYS = ["image", "label"]
AFFINE = torch.diag(torch.tensor([1.5, 1.5, 2.0, 1.0], dtype=torch.float64))
AFFINE[:3, 3] = torch.tensor([-10.0, 20.0, 5.0])


def sample(shape=(1, 6, 4, 4)) -> dict:
    image = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape) - 1000
    label = torch.zeros(shape)
    label[:, : shape[1] // 2, : shape[2] // 2, : shape[3] // 2] = 3  # only the first octant has lung
    label[0, 0, 0, 0] = 5
    return {"image": MetaTensor(image, affine=AFFINE.clone()), "label": MetaTensor(label, affine=AFFINE.clone()),
            "uid": "case-1"}


def write_case(tmp_path, direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1)):
    """A tiny LUNA16-like pair on disk: int16 CT and {0, 3, 4, 5} mask, flipped header, anisotropic spacing."""
    rng = np.random.default_rng(3)
    ct = rng.integers(-1024, 400, (5, 9, 10)).astype(np.int16)  # (z, y, x)
    mask = np.zeros_like(ct, dtype=np.uint8)
    mask[1:4, 2:7, 1:4], mask[1:4, 2:7, 6:9], mask[1:4, 4, 5] = 3, 4, 5
    paths = {}
    for key, array in (("image", ct), ("label", mask)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.8, 0.8, 2.0))
        image.SetOrigin((100.0, -50.0, -300.0))
        image.SetDirection(direction)
        paths[key] = str(tmp_path / f"{key}.mhd")
        sitk.WriteImage(image, paths[key], True)
    return paths


def test_lungmaskd_normalize_denormalize_wrappers():
    d = sample()
    out = LungMaskd("label", mode="lungs")(d)
    assert out["label"].dtype == torch.uint8 and out["label"][0, 0, 0, 0] == 0 and out["label"].sum() == 11
    out = NormalizeHUd("image")(out)
    assert out["image"].min() == pytest.approx(-0.7773595, abs=1e-6) and out["uid"] == "case-1"
    out = DenormalizeHUd("image")(out)
    assert out["image"].min() == pytest.approx(-1000.0, abs=1e-3)
    assert d["image"].min() == -1000 and d["label"].max() == 5  # input dict untouched
    assert LungMaskd(["label", "other"], allow_missing_keys=True)(d)["label"].max() == 1


def test_crop_or_padd_fill_per_key_and_inverse():
    d = sample()
    transform = CropOrPadd(KEYS, spatial_size=(8, 2, 6), fill=("min", 0))
    out = transform(d)
    assert out["image"].shape == out["label"].shape == (1, 8, 2, 6)
    assert out["image"][0, 0].eq(-1000).all() and out["label"][0, 0].eq(0).all()
    torch.testing.assert_close(out["image"].affine, out["label"].affine)
    back = transform.inverse(out)
    for key in KEYS:
        assert back[key].shape == d[key].shape
        torch.testing.assert_close(back[key].affine, d[key].affine)


@pytest.mark.parametrize("fill", [("min", 0, 1), ()])
def test_crop_or_padd_fill_count(fill):
    with pytest.raises(InputError, match="one value or one per key"):
        CropOrPadd(KEYS, (4, 4, 4), fill=fill)


def test_luna16_chain_inverts_to_original_geometry_and_saves(tmp_path):
    paths = write_case(tmp_path)
    chain = Compose([
        LoadImaged(KEYS, reader=SimpleITKReader(), dtype=None),
        EnsureChannelFirstd(KEYS),
        Orientationd(KEYS, axcodes="RAS"),
        Spacingd(KEYS, pixdim=(0.4, 0.4, 1.0), mode=("bilinear", "nearest")),
        LungMaskd("label"),
        CropOrPadd(KEYS, spatial_size=(16, 24, 8), fill=("min", 0)),
        NormalizeHUd("image"),
    ])
    out = chain(dict(paths))
    assert out["image"].shape == out["label"].shape == (1, 16, 24, 8)
    assert out["image"].dtype == torch.float32 and out["label"].dtype == torch.uint8
    out["pred"] = out["label"].clone()
    post = Compose([
        Invertd("pred", transform=chain, orig_keys="label", nearest_interp=True),
        SaveImaged("pred", output_dir=tmp_path / "out", output_postfix="pred", output_ext=".mhd",
                   output_dtype=np.uint8, separate_folder=False, print_log=False, writer=SimpleITKWriter),
    ])
    inverted = post(out)["pred"]
    assert inverted.shape == (1, 10, 9, 5)
    original = sitk.ReadImage(paths["label"])
    saved = sitk.ReadImage(str(tmp_path / "out" / "label_pred.mhd"))
    for get in ("GetOrigin", "GetSpacing", "GetDirection"):
        np.testing.assert_allclose(getattr(saved, get)(), getattr(original, get)(), atol=1e-6)
    expected = (sitk.GetArrayFromImage(original) > 0).astype(np.uint8)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), expected)


def test_octantsd_drop_empty_keys_and_affine():
    d = sample()
    parts = Octantsd(KEYS, label_key="label")(d)
    assert [p["octant"] for p in parts] == [0]
    assert parts[0]["uid"] == "case-1" and parts[0]["image"].shape == (1, 3, 2, 2)
    everything = Octantsd(KEYS, drop_empty=False)(d)
    assert [p["octant"] for p in everything] == list(range(8))
    octant = everything[7]  # (1, 1, 1): starts at voxel (3, 2, 2)
    torch.testing.assert_close(octant["image"].as_tensor(), d["image"][:, 3:, 2:, 2:].as_tensor())
    expected_origin = (AFFINE @ torch.tensor([3.0, 2.0, 2.0, 1.0], dtype=torch.float64))[:3]
    for key in KEYS:
        torch.testing.assert_close(octant[key].affine[:3, 3], expected_origin)


def test_octantsd_in_compose_gives_a_flat_list_and_is_deterministic():
    d = sample()
    d["label"][:, 3:, 2:, 2:] = 4  # octant 7 also has lung
    chain = Compose([Octantsd(KEYS), NormalizeHUd("image")])
    first, second = chain(dict(d)), chain(dict(d))
    assert [p["octant"] for p in first] == [p["octant"] for p in second] == [0, 7]
    assert all(p["image"].dtype == torch.float32 for p in first)


def test_octantsd_errors():
    with pytest.raises(InputError, match="label_key 'mask'"):
        Octantsd(["image"], label_key="mask")(sample())
    with pytest.raises(ValueError, match=r"\(5, 4, 4\)"):
        Octantsd(KEYS)(sample(shape=(1, 5, 4, 4)))
    assert Octantsd(KEYS)({**sample(), "label": MetaTensor(torch.zeros(1, 6, 4, 4))}) == []
