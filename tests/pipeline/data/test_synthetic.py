"""Synthetic LUNA16 phantoms: layout, determinism, geometry, tissue values and label sides."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from pipeline.data import luna16, synthetic
from pipeline.data.synthetic import Tissue, generate_case, generate_dataset, render_case, write_case
from transforms.errors import InputError
from transforms.functional import LUNA16_LEFT_LUNG, LUNA16_RIGHT_LUNG, LUNA16_TRACHEA

UID_RE = re.compile(r"^1\.3\.6\.1\.4\.1\.14519\.5\.2\.1\.6279\.6001\.[1-9]\d{29}$")
CASES = 4  # index 3 is the flipped one
SEEDS = [1, 6, 10, 15]  # whole chests: -2048 out of field; emphysema + consolidation; no circular field; arms down
LUNGS = (LUNA16_LEFT_LUNG, LUNA16_RIGHT_LUNG)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[str]]:
    out = tmp_path_factory.mktemp("synthetic") / "luna16"
    return out, generate_dataset(out, cases=CASES, seed=7)


@pytest.fixture(scope="module", params=SEEDS)
def seeded_case(request) -> tuple[int, synthetic.SyntheticCase]:
    return request.param, render_case(request.param)


@pytest.fixture(scope="module")
def case(seeded_case) -> synthetic.SyntheticCase:
    return seeded_case[1]


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def away_from_air(tissue: np.ndarray, kind: Tissue) -> np.ndarray:
    """Voxels of one tissue not next to air in-plane (where real-CT HU are read: partial volume with air aside)."""
    air = np.isin(tissue, (Tissue.AIR, Tissue.OUT_OF_FIELD, Tissue.AIRWAY))
    near = ndimage.binary_dilation(air, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
    return (tissue == kind) & ~near


def world_centroid(image: sitk.Image, selected: np.ndarray) -> np.ndarray:
    """World (LPS mm) centroid of the voxels where ``selected`` is true; arrays are (z, y, x)."""
    z, y, x = np.nonzero(selected)
    return np.array(image.TransformContinuousIndexToPhysicalPoint([x.mean(), y.mean(), z.mean()]))


# ---------------------------------------------------------------- files on disk


def test_layout_and_names(dataset):
    out, uids = dataset
    assert len(uids) == CASES == len(set(uids)) and all(UID_RE.match(uid) for uid in uids)
    expected = {f"{folder}/{uid}{ext}" for folder in (luna16.IMAGE_DIR, luna16.MASK_DIR) for uid in uids
                for ext in (".mhd", ".zraw")}
    assert set(files_of(out)) == expected  # nothing else: no temporary folders left behind
    header = (out / luna16.IMAGE_DIR / f"{uids[0]}.mhd").read_text()
    assert "CompressedData = True" in header and f"ElementDataFile = {uids[0]}.zraw" in header
    assert [c.uid for c in luna16.find_cases(out)] == sorted(uids)


def test_same_seed_same_bytes(dataset, tmp_path):
    out, uids = dataset
    assert generate_dataset(tmp_path / "again", cases=CASES, seed=7, workers=2) == uids
    assert files_of(tmp_path / "again") == files_of(out)
    other = generate_dataset(tmp_path / "other", cases=1, seed=8)
    assert other[0] != uids[0]
    assert files_of(tmp_path / "other") != {k: v for k, v in files_of(out).items() if uids[0] in k}


def test_written_geometry(dataset):
    out, uids = dataset
    for index, uid in enumerate(uids):
        ct = sitk.ReadImage(str(out / luna16.IMAGE_DIR / f"{uid}.mhd"))
        mask = sitk.ReadImage(str(out / luna16.MASK_DIR / f"{uid}.mhd"))
        assert ct.GetPixelID() == sitk.sitkInt16 and mask.GetPixelID() == sitk.sitkUInt8
        assert ct.GetSize() == mask.GetSize() and ct.GetSize()[:2] == (128, 128) and ct.GetSize()[2] >= 16
        np.testing.assert_allclose(ct.GetSpacing(), mask.GetSpacing())
        np.testing.assert_allclose(ct.GetOrigin(), mask.GetOrigin())
        np.testing.assert_allclose(ct.GetDirection(), mask.GetDirection())
        sx, sy, sz = ct.GetSpacing()
        assert sx == sy and 1.3 <= sx <= 5.5 and 2.5 <= sz <= 3.5  # an adult chest drawn coarse (cropped: finer)
        flipped = index % 4 == 3
        assert ct.GetDirection() == (synthetic.FLIPPED_XY if flipped else synthetic.IDENTITY)
        if not flipped:
            assert all(o < 0 for o in ct.GetOrigin())


def test_left_lung_on_patient_left_in_world(dataset):
    """LPS: +x is the patient's left, +y posterior, +z superior; checked through each file's direction matrix."""
    out, uids = dataset
    for uid in uids:
        ct_image = sitk.ReadImage(str(out / luna16.IMAGE_DIR / f"{uid}.mhd"))
        image = sitk.ReadImage(str(out / luna16.MASK_DIR / f"{uid}.mhd"))
        mask, ct = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(ct_image)
        left = world_centroid(image, mask == LUNA16_LEFT_LUNG)
        right = world_centroid(image, mask == LUNA16_RIGHT_LUNG)
        lungs = world_centroid(image, np.isin(mask, LUNGS))
        trachea = world_centroid(image, mask == LUNA16_TRACHEA)
        bone = world_centroid(image, (ct > 400) & (np.abs(np.arange(ct.shape[2]) - ct.shape[2] / 2) < 8))
        assert left[0] > right[0], (uid, left, right)
        if (mask == LUNA16_TRACHEA).any():  # not in an abdomen scan of the lung bases
            assert trachea[2] > lungs[2]  # airway above the lungs' centre
        assert bone[1] > lungs[1]  # spine behind the lungs


def test_flipped_case_has_the_same_world_anatomy():
    plain, flipped = render_case(11, flipped=False), render_case(11, flipped=True)
    np.testing.assert_array_equal(flipped.ct, plain.ct[:, ::-1, ::-1])
    np.testing.assert_array_equal(flipped.mask, plain.mask[:, ::-1, ::-1])
    nz, ny, nx = plain.ct.shape

    def world(c, index):
        image = sitk.Image(nx, ny, nz, sitk.sitkUInt8)
        image.SetSpacing(c.spacing), image.SetOrigin(c.origin), image.SetDirection(c.direction)
        return np.array(image.TransformIndexToPhysicalPoint(index))

    np.testing.assert_allclose(world(flipped, (0, 0, 5)), world(plain, (nx - 1, ny - 1, 5)), atol=1e-4)
    assert flipped.direction == synthetic.FLIPPED_XY and plain.direction == synthetic.IDENTITY


# ---------------------------------------------------------------- tissues and labels


def test_tissue_hu(seeded_case):
    seed, case = seeded_case
    ct, tissue = case.ct, case.tissue
    assert ct.dtype == np.int16 and case.mask.dtype == np.uint8 and ct.shape == case.mask.shape == tissue.shape
    lung_median = np.median(ct[np.isin(case.mask, LUNGS)])
    assert -950 <= lung_median <= -750  # -950: emphysema
    assert 0 <= np.median(ct[tissue == Tissue.SOFT_TISSUE]) <= 80
    assert -150 <= np.median(ct[away_from_air(tissue, Tissue.FAT)]) <= -50
    assert (ct[tissue == Tissue.BONE] > 400).mean() > 0.5
    vessels = ct[tissue == Tissue.VESSEL]
    # vessels a voxel or two wide lose contrast to partial volume, as in real CT
    assert vessels.size and np.median(vessels) > lung_median + 50 and np.percentile(vessels, 90) > -600
    contrast = synthetic._true_scale(seed, False).contrast
    assert vessels.max() <= 300 + contrast
    assert abs(np.median(ct[tissue == Tissue.AIR]) + 1000) <= 10
    airway = ct[tissue == Tissue.AIRWAY]  # a few voxels across: partial volume lifts the rim
    assert np.median(airway) < -700 and np.percentile(airway, 10) < -950
    outside = tissue == Tissue.OUT_OF_FIELD
    if case.out_of_field is None:
        assert not outside.any() and ct.min() >= synthetic.HU_RANGE[0]
    else:
        assert outside[:, 0, 0].all() and (ct[outside] == case.out_of_field).all()


def test_labels_and_lung_fraction(case):
    assert set(np.unique(case.mask)) == {0, LUNA16_LEFT_LUNG, LUNA16_RIGHT_LUNG, LUNA16_TRACHEA}
    lungs = np.isin(case.mask, LUNGS)
    body = (case.ct > -500) | (case.mask > 0)
    assert 0.05 <= lungs.sum() / body.sum() <= 0.25
    assert (case.mask == LUNA16_RIGHT_LUNG).sum() > (case.mask == LUNA16_LEFT_LUNG).sum()  # right lung bigger
    assert (case.tissue[case.mask > 0] != Tissue.BONE).all()


def test_out_of_field_variants():
    values = {render_case(seed, shape=(32, 32, 16)).out_of_field for seed in range(8)}
    assert values == set(synthetic.OUT_OF_FIELD_CHOICES)
    assert {synthetic._true_scale(seed, False).out_of_field for seed in range(16)} == set(
        synthetic.TRUE_SCALE_OUT_OF_FIELD)


# ---------------------------------------------------------------- true scale (the default)


def _trunk(case) -> np.ndarray:
    """The patient's trunk: body tissue connected to the lungs (arms, table and out-of-field air left out)."""
    body = ~np.isin(case.tissue, (Tissue.AIR, Tissue.OUT_OF_FIELD, Tissue.TABLE))
    inside = np.zeros_like(body)
    for k in range(body.shape[0]):
        parts, _ = ndimage.label(ndimage.binary_fill_holes(body[k]))
        lung = case.mask[k] > 0
        keep = np.unique(parts[lung & (parts > 0)]) if lung.any() else np.unique(parts[parts > 0])[:0]
        inside[k] = np.isin(parts, keep)
    return inside


@pytest.mark.parametrize("seed", [1, 3, 6, 10, 11, 14, 15, 20])
def test_whole_chest_phantoms_have_an_adult_s_sizes_and_hounsfield_units(seed):
    """Ranges of adult chest CT: trunk 280-380 mm wide and 180-300 mm deep, lungs 2-7 L (right > left) over
    200-280 mm head to foot; tissue HU means: lung -950..-750, fat -130..-70, muscle 20..70, liver 45..80,
    blood 30..60 (plus the contrast agent's 150..400 where given), bone > 300, air -1000 (each read away from air,
    as on a real scan)."""
    case = render_case(seed)
    assert synthetic._true_scale(seed, False).coverage == "chest"
    sx, sy, sz = case.spacing
    trunk = _trunk(case)
    level = int(np.argmax((np.isin(case.mask, LUNGS)).sum(axis=(1, 2))))
    rows, cols = np.nonzero(trunk[level])
    width, depth = (cols.max() - cols.min() + 1) * sx, (rows.max() - rows.min() + 1) * sy
    assert 280 <= width <= 385 and 180 <= depth <= 300, (width, depth)
    voxel_l = sx * sy * sz / 1e6
    right, left = ((case.mask == label).sum() * voxel_l for label in (LUNA16_RIGHT_LUNG, LUNA16_LEFT_LUNG))
    assert 2.0 <= right + left <= 7.0 and right > left, (right, left)
    slices = np.flatnonzero(np.isin(case.mask, LUNGS).any(axis=(1, 2)))
    assert 190 <= (slices[-1] - slices[0] + 1) * sz <= 290
    ct, tissue = case.ct.astype(np.float32), case.tissue
    means = {t: ct[away_from_air(tissue, t)].mean() for t in (Tissue.FAT, Tissue.SOFT_TISSUE, Tissue.LIVER, Tissue.BONE)}
    assert -950 <= ct[np.isin(case.mask, LUNGS)].mean() <= -750
    assert -130 <= means[Tissue.FAT] <= -70 and 20 <= means[Tissue.SOFT_TISSUE] <= 70
    assert 45 <= means[Tissue.LIVER] <= 80 and means[Tissue.BONE] > 300
    contrast = synthetic._true_scale(seed, False).contrast  # iodine: +150..400 HU in about a third of the scans
    assert 30 + 0.9 * contrast <= np.median(ct[tissue == Tissue.BLOOD]) <= 60 + contrast  # 0.9: partial volume
    assert abs(np.median(ct[tissue == Tissue.AIR]) + 1000) <= 10


def test_abdomen_scans_cropped_fields_arms_and_diseased_lungs():
    draws = {seed: synthetic._true_scale(seed, False) for seed in range(24)}
    assert {d.coverage for d in draws.values()} == {"chest", "bases", "cropped"}
    assert any(d.arms for d in draws.values()) and any(d.emphysema for d in draws.values())
    assert any(d.consolidation for d in draws.values()) and any(d.contrast for d in draws.values())

    bases = render_case(12)  # lung bases under an abdomen: gas in the bowel, none of it lung
    assert draws[12].coverage == "bases"
    lung_l = np.isin(bases.mask, LUNGS).sum() * np.prod(bases.spacing) / 1e6
    assert 0.1 <= lung_l <= 2.0
    lowest_lung = np.flatnonzero(np.isin(bases.mask, LUNGS).any(axis=(1, 2)))[0]
    gas = (bases.tissue[:lowest_lung] == Tissue.AIRWAY) & (bases.mask[:lowest_lung] == 0)
    assert gas.sum() * np.prod(bases.spacing) / 1e3 > 10  # mL of bowel gas below the lungs
    assert (bases.ct[:lowest_lung][gas] < -700).mean() > 0.8

    cropped = render_case(0)  # a field of view narrower than the chest: body and lungs run off both sides
    body = ~np.isin(cropped.tissue, (Tissue.AIR, Tissue.TABLE))
    assert draws[0].coverage == "cropped" and cropped.out_of_field is None
    assert body[:, :, 0].any() and body[:, :, -1].any()
    lungs = np.isin(cropped.mask, LUNGS)
    assert lungs[:, :, 0].any() or lungs[:, :, -1].any()  # a lung cut by the field's edge

    arms = render_case(15)  # arms down: two limbs beside the trunk, each with a humerus
    level = int(np.argmax(np.isin(arms.mask, LUNGS).sum(axis=(1, 2))))
    parts, n = ndimage.label(~np.isin(arms.tissue[level], (Tissue.AIR, Tissue.OUT_OF_FIELD, Tissue.TABLE)))
    assert n == 3 and (arms.tissue[level][parts != parts[tuple(np.argwhere(arms.mask[level] > 0)[0])]]
                       == Tissue.BONE).any()

    emphysema, healthy = render_case(6), render_case(1)
    lung_hu = [np.median(c.ct[c.tissue == Tissue.LUNG]) for c in (emphysema, healthy)]
    assert lung_hu[0] < lung_hu[1] - 40
    solid = (np.isin(emphysema.mask, LUNGS)) & (emphysema.ct > -100)  # consolidation: dense yet labelled lung
    assert solid.sum() * np.prod(emphysema.spacing) / 1e3 > 10


def test_recognisable_at_2_5_mm():
    ct, mask, spacing, _, _ = generate_case(3)
    zoom = np.array(spacing[::-1]) / 2.5  # (z, y, x)
    small_mask = ndimage.zoom(mask, zoom, order=0)
    small_ct = ndimage.zoom(ct.astype(np.float32), zoom, order=1)
    for label in LUNGS:
        assert (small_mask == label).sum() > 200
    assert np.median(small_ct[np.isin(small_mask, LUNGS)]) < -700


def test_seed_varies_the_anatomy():
    a, b = render_case(20), render_case(22)
    assert a.ct.shape != b.ct.shape or (a.mask == 3).sum() != (b.mask == 3).sum()
    assert a.spacing != b.spacing


# ---------------------------------------------------------------- arguments


def test_shape_is_x_y_z():
    ct, mask, spacing, origin, direction = generate_case(5, shape=(40, 36, 20))
    assert ct.shape == mask.shape == (20, 36, 40)
    assert len(spacing) == len(origin) == 3 and len(direction) == 9
    assert set(np.unique(mask)) >= {0, *LUNGS}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": (8, 64, 64)}, "at least 16 voxels"),
        ({"shape": (64, 64)}, r"three integers \(X, Y, Z\)"),
        ({"shape": "big"}, r"three integers \(X, Y, Z\)"),
        ({"shape": (64, 64, 32), "full_size": True}, "either shape or full_size"),
    ],
)
def test_bad_shape(kwargs, match):
    with pytest.raises(InputError, match=match):
        generate_case(0, **kwargs)


@pytest.mark.parametrize("kwargs, match", [({"cases": 0}, "cases must be >= 1"), ({"workers": 0}, "workers must be")])
def test_bad_dataset_arguments(tmp_path, kwargs, match):
    with pytest.raises(InputError, match=match):
        generate_dataset(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_write_case_shape_mismatch(tmp_path):
    with pytest.raises(InputError, match="must be equal"):
        write_case(tmp_path, "1.2", np.zeros((2, 3, 4), np.int16), np.zeros((2, 3, 3), np.uint8),
                   (1, 1, 1), (0, 0, 0), synthetic.IDENTITY)


@pytest.mark.slow
def test_full_size():
    c = render_case(2, full_size=True)
    nz, ny, nx = c.ct.shape
    assert (ny, nx) == (512, 512) and 0.5 <= c.spacing[0] <= 0.98 and 1.0 <= c.spacing[2] <= 2.5
    assert 150 <= nz * c.spacing[2] <= 450  # mm head to foot
    assert set(np.unique(c.mask)) == {0, *LUNGS, LUNA16_TRACHEA}
    assert -900 <= np.median(c.ct[np.isin(c.mask, LUNGS)]) <= -750
