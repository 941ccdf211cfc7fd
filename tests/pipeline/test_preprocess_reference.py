"""``python -m pipeline preprocess ... --reference``: the reference's normalize_dataset.py grid, voxel for voxel."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pipeline.data.luna16 import NORMALIZED_IMAGE_DIR, NORMALIZED_MASK_DIR
from pipeline.data.synthetic import generate_case, write_case
from pipeline.preprocess import preprocess_dataset
from tests.reference_algorithm import normalize_file
from transforms import ReferenceResample, ReferenceResampled, read_image, reference_grid
from transforms.errors import InputError

REPO = Path(__file__).resolve().parents[2]
VOX = 2.5
SHAPE_MAX = (30, 40, 45)  # the reference's (Z_MAX, Y_MAX, X_MAX)
# (uid, in-plane spacing, z spacing, flipped): a 128 x 128 x 69 phantom resampled to (x = y, z) voxels of
#   a: 43, 31 -> crop y by 3 (odd), pad x by 2, crop z 31 -> 30 (odd size to even)
#   b: 38, 24 -> pad y by 2, pad x by 7 (odd), pad z by 6
#   c: 50, 35 -> crop y 50 -> 40, crop x 50 -> 45 (even size to odd), crop z 35 -> 30; direction flipped
#   d: as a, direction flipped (x and y reversed in the world, the array as stored)
CASES = (("1.2.840.a", 0.840382, 1.125, False), ("1.2.840.b", 0.74, 0.87, False),
         ("1.2.840.c", 0.98, 1.27, True), ("1.2.840.d", 0.840382, 1.125, True))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("luna16")
    for i, (uid, in_plane, z, flipped) in enumerate(CASES):
        ct, mask, _, origin, direction = generate_case(3 + i, shape=(128, 128, 69), flipped=flipped)
        write_case(root, uid, ct, mask, (in_plane, in_plane, z), origin, direction)
    cmd = [sys.executable, "-m", "pipeline", "preprocess", str(root), str(VOX), *map(str, SHAPE_MAX), "--reference",
           "--workers", "1", "--no-progress"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(CASES)} done" in done.stdout
    return root


@pytest.mark.parametrize("case", CASES, ids=[c[0][-1] for c in CASES])
def test_reference_mode_equals_the_reference_algorithm(reference_run, case):
    uid = case[0]
    ours_ct = sitk.ReadImage(str(reference_run / NORMALIZED_IMAGE_DIR / f"{uid}.mhd"))
    ours_mask = sitk.ReadImage(str(reference_run / NORMALIZED_MASK_DIR / f"{uid}.mhd"))
    ct_path = next((reference_run / "lung_ct_image").glob(f"{uid}.mhd"))
    mask_path = next((reference_run / "seg-lungs-LUNA16").glob(f"{uid}.mhd"))
    expected_ct = normalize_file(ct_path, VOX, SHAPE_MAX, mask=False)
    expected_mask = normalize_file(mask_path, VOX, SHAPE_MAX, mask=True)

    ct, mask = sitk.GetArrayFromImage(ours_ct), sitk.GetArrayFromImage(ours_mask)
    assert ct.shape == mask.shape == SHAPE_MAX
    np.testing.assert_array_equal(mask, expected_mask)
    assert 0 < mask.mean() < 1
    assert np.abs(ct.astype(int) - expected_ct).max() <= 1
    assert ct.dtype == np.int16 and ct.min() == expected_ct.min()  # padded with the resampled volume's minimum


@pytest.mark.parametrize("case", CASES, ids=[c[0][-1] for c in CASES])
def test_reference_mode_writes_the_true_geometry(reference_run, case):
    """Output voxel 0 sits where scipy's corner-aligned zoom and the crop offset put it in the input's world."""
    uid, in_plane, z, _ = case
    source = sitk.ReadImage(str(reference_run / "lung_ct_image" / f"{uid}.mhd"))
    out = sitk.ReadImage(str(reference_run / NORMALIZED_IMAGE_DIR / f"{uid}.mhd"))
    new_size, step, start = reference_grid(source.GetSize(), source.GetSpacing(), VOX, SHAPE_MAX[::-1])
    assert out.GetDirection() == pytest.approx(source.GetDirection())
    assert out.GetSpacing() == pytest.approx(tuple(s * k for s, k in zip(source.GetSpacing(), step)))
    assert out.GetSpacing() != pytest.approx((VOX,) * 3)  # what the reference writes, not the true spacing
    for corner in ((0, 0, 0), tuple(n - 1 for n in out.GetSize())):
        continuous = [(c + s) * k for c, s, k in zip(corner, start, step)]
        assert out.TransformIndexToPhysicalPoint(corner) == pytest.approx(
            source.TransformContinuousIndexToPhysicalPoint(continuous), abs=1e-6)
    # the reference's size rule: round(size x spacing / vox_spacing)
    assert new_size == tuple(round(n * s / VOX) for n, s in zip(source.GetSize(), (in_plane, in_plane, z)))


def test_bundle_chain_in_reference_mode_matches_the_cli_files(reference_run, tmp_path):
    """The training chain of train.json with reference_grid: true gives the arrays preprocess --reference wrote."""
    from pipeline.config import config_file
    from pipeline.preprocess import config_chain

    chain = config_chain([config_file("train.json")], {"reference_grid": True, "vox_spacing": VOX,
                                                        "spatial_size": list(SHAPE_MAX[::-1])})
    names = [type(t).__name__ for t in chain.transforms.transforms]
    assert "ReferenceResampled" in names and not {"Orientationd", "Spacingd", "CropOrPadd"} & set(names)
    uid = CASES[2][0]
    data = chain.transforms({"image": read_image(reference_run / "lung_ct_image" / f"{uid}.mhd"),
                             "label": read_image(reference_run / "seg-lungs-LUNA16" / f"{uid}.mhd")})
    written = read_image(reference_run / NORMALIZED_IMAGE_DIR / f"{uid}.mhd")
    np.testing.assert_array_equal(data["image"].numpy(), written.numpy())
    np.testing.assert_allclose(data["image"].affine.numpy(), written.affine.numpy(), atol=1e-5)


def test_training_in_reference_mode_reads_the_written_files_unchanged(reference_run):
    """Files of preprocess --reference (true spacing near, not at, vox_spacing) are on the grid: no second zoom."""
    from pipeline.config import config_file
    from pipeline.preprocess import config_chain

    chain = config_chain([config_file("train.json")], {"reference_grid": True, "vox_spacing": VOX,
                                                        "spatial_size": list(SHAPE_MAX[::-1])})
    for uid, *_ in CASES:
        image = read_image(reference_run / NORMALIZED_IMAGE_DIR / f"{uid}.mhd")
        label = read_image(reference_run / NORMALIZED_MASK_DIR / f"{uid}.mhd")
        assert not np.allclose(image.pixdim, VOX, rtol=1e-3, atol=0)  # the true spacing is not vox_spacing ...
        data = chain.transforms({"image": image, "label": label})
        np.testing.assert_array_equal(data["image"].numpy(), image.numpy())  # ... and the arrays stay as written
        np.testing.assert_array_equal(data["label"].numpy(), label.numpy())


def test_reference_resample_of_plain_arrays():
    rng = np.random.default_rng(0)
    ct = rng.integers(-1000, 400, (1, 20, 20, 12)).astype(np.int16)
    out = ReferenceResample(2.0, (10, 12, 8))
    with pytest.raises(InputError, match="pass spacing="):
        out(ct)
    from transforms import resample_like_reference

    resampled = resample_like_reference(ct, 2.0, (10, 12, 8), spacing=(1.0, 1.0, 1.5))
    assert isinstance(resampled, np.ndarray) and resampled.dtype == np.int16 and resampled.shape == (1, 10, 12, 8)
    same = resample_like_reference(resampled, 2.0, (10, 12, 8), spacing=(2.0, 2.0, 2.0))
    np.testing.assert_array_equal(same, resampled)


def test_default_mode_is_not_the_reference_grid(reference_run, tmp_path):
    """Without --reference the grid differs (linear/nearest on RAS): the switch is what makes the files equal."""
    root = reference_run
    out = tmp_path / "default"
    for sub in ("lung_ct_image", "seg-lungs-LUNA16"):
        (out / sub).mkdir(parents=True)
        for f in (root / sub).glob(f"{CASES[0][0]}.*"):
            (out / sub / f.name).write_bytes(f.read_bytes())
    results = preprocess_dataset(out, VOX, SHAPE_MAX[::-1], workers=1, progress=False)
    assert [r.status for r in results] == ["done"]
    ours = sitk.GetArrayFromImage(sitk.ReadImage(str(out / NORMALIZED_MASK_DIR / f"{CASES[0][0]}.mhd")))
    ref = sitk.GetArrayFromImage(sitk.ReadImage(str(root / NORMALIZED_MASK_DIR / f"{CASES[0][0]}.mhd")))
    assert ours.shape == ref.shape and not np.array_equal(ours, ref)


def test_reference_grid_refuses_other_label_modes():
    with pytest.raises(InputError, match="label_mode 'binary'"):
        ReferenceResampled(["image", "label"], VOX, (8, 8, 8), mask=(False, True), label_mode="lungs")
    with pytest.raises(InputError, match="vox_spacing"):
        ReferenceResample(0, (8, 8, 8))


def test_reference_resample_rejects_non_luna16_mask_values():
    from monai.data import MetaTensor

    bad = MetaTensor(np.full((1, 8, 8, 8), 7, np.uint8), meta={"filename_or_obj": "m.mhd"})
    with pytest.raises(InputError, match=r"m\.mhd.*unexpected label values \[7\]"):
        ReferenceResample(1.0, (8, 8, 8), mask=True)(bad)


def test_reference_grid_with_a_non_binary_label_mode_is_one_error_before_any_case(tmp_path):
    (tmp_path / "lung_ct_image").mkdir()
    (tmp_path / "seg-lungs-LUNA16").mkdir()
    with pytest.raises(InputError, match="label_mode 'binary'") as err:
        preprocess_dataset(tmp_path, workers=1, progress=False,
                           overrides={"reference_grid": True, "label_mode": "lungs"})
    assert "\n" not in str(err.value)
