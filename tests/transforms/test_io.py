"""SimpleITK reader/writer: exact geometry round trips per format, MONAI integration, bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureChannelFirstd, LoadImage, LoadImaged, Orientationd, SaveImage, SpatialCrop

from tests.dicom import write_dicom_series
from transforms import InputError, SimpleITKReader, SimpleITKWriter, read_image, write_image
from transforms.io import metatensor_to_sitk, sitk_to_metatensor

TOL = 1e-6
SHAPE_ZYX = (4, 5, 6)  # numpy (z, y, x) -> image size (6, 5, 4)
ORIGIN = (-120.3, 85.25, -301.7)
SPACING = (0.703125, 0.76, 2.5)
IDENTITY = (1, 0, 0, 0, 1, 0, 0, 0, 1)
FLIP_X = (-1, 0, 0, 0, 1, 0, 0, 0, 1)  # det -1, the LUNA16 "flipped header" case
PERMUTE_XY = (0, 1, 0, 1, 0, 0, 0, 0, 1)  # det -1 permutation
ROTATE_Z = (0, -1, 0, 1, 0, 0, 0, 0, 1)  # det +1 (DICOM can only store right-handed frames)
FLIP_XY = (-1, 0, 0, 0, -1, 0, 0, 0, 1)  # det +1
FORMATS = [".mhd", ".mha", ".nrrd", ".nii", ".nii.gz"]
KINDS = ["ct", "mask"]


def make_image(kind: str, direction=FLIP_X, origin=ORIGIN, spacing=SPACING) -> sitk.Image:
    """int16 CT-like HU values or a uint8 0/1/2 mask, non-trivial geometry."""
    rng = np.random.default_rng(7)
    if kind == "ct":
        array = rng.integers(-3024, 3071, SHAPE_ZYX).astype(np.int16)
    else:
        array = rng.integers(0, 3, SHAPE_ZYX).astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def read_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def assert_same_image(expected: sitk.Image, actual: sitk.Image) -> None:
    np.testing.assert_allclose(actual.GetOrigin(), expected.GetOrigin(), rtol=0, atol=TOL)
    np.testing.assert_allclose(actual.GetSpacing(), expected.GetSpacing(), rtol=0, atol=TOL)
    np.testing.assert_allclose(actual.GetDirection(), expected.GetDirection(), rtol=0, atol=TOL)
    assert actual.GetPixelID() == expected.GetPixelID()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(actual), sitk.GetArrayFromImage(expected))


def ras_point(image: sitk.Image, index) -> np.ndarray:
    lps = np.asarray(image.TransformContinuousIndexToPhysicalPoint([float(i) for i in index]))
    return lps * np.array([-1.0, -1.0, 1.0])


# --- round trips ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("direction", [FLIP_X, PERMUTE_XY, ROTATE_Z])
def test_round_trip_read_image_write_image(tmp_path, suffix, kind, direction):
    source = tmp_path / f"source{suffix}"
    sitk.WriteImage(make_image(kind, direction), str(source), True)
    img = read_image(source)
    assert img.dtype == (torch.int16 if kind == "ct" else torch.uint8)
    target = tmp_path / "out" / f"copy{suffix}"
    write_image(img, target)
    assert_same_image(sitk.ReadImage(str(source)), sitk.ReadImage(str(target)))


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_monai_loadimage_saveimage(tmp_path, suffix, kind):
    source = tmp_path / f"case{suffix}"
    sitk.WriteImage(make_image(kind, PERMUTE_XY), str(source), True)
    load = LoadImage(reader=SimpleITKReader(), image_only=True, ensure_channel_first=True, dtype=None)
    save = SaveImage(output_dir=tmp_path / "saved", output_postfix="rt", output_ext=suffix, output_dtype=None,
                     writer="transforms.io.SimpleITKWriter", separate_folder=False, print_log=False)
    img = load(source)
    assert img.shape == (1, 6, 5, 4)
    save(img)
    assert_same_image(sitk.ReadImage(str(source)), sitk.ReadImage(str(tmp_path / "saved" / f"case_rt{suffix}")))


@pytest.fixture
def writer_table():
    """MONAI's process-wide writer table, restored after the test (register_writer changes it on purpose)."""
    from monai.data import image_writer

    saved = {k: tuple(v) for k, v in image_writer.SUPPORTED_WRITERS.items()}
    yield image_writer.SUPPORTED_WRITERS
    image_writer.SUPPORTED_WRITERS.clear()
    image_writer.SUPPORTED_WRITERS.update(saved)


@pytest.mark.parametrize("suffix", FORMATS)
def test_saveimage_picks_registered_writer_by_suffix(tmp_path, suffix, writer_table):
    from transforms import register_writer

    register_writer()
    assert all(writer_table[s[1:]][0] is SimpleITKWriter for s in FORMATS)
    assert "png" in writer_table and writer_table["png"][0] is not SimpleITKWriter  # MONAI's others kept
    source = tmp_path / f"case{suffix}"
    sitk.WriteImage(make_image("mask", FLIP_X), str(source), True)
    load = LoadImage(reader="transforms.io.SimpleITKReader", image_only=True, ensure_channel_first=True, dtype=None)
    img = load(source)
    save = SaveImage(output_dir=tmp_path, output_postfix="seg", output_ext=suffix, output_dtype=np.uint8,
                     separate_folder=False, print_log=False)
    save(img)
    assert isinstance(save.writer_obj, SimpleITKWriter)
    assert_same_image(sitk.ReadImage(str(source)), sitk.ReadImage(str(tmp_path / f"case_seg{suffix}")))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("direction", [IDENTITY, FLIP_XY, ROTATE_Z])
def test_dicom_series_round_trip(tmp_path, kind, direction):
    image = make_image(kind, direction, origin=(-120.5, 85.25, -301.75), spacing=(0.75, 0.5, 2.5))
    write_dicom_series(image, tmp_path / "dicom")
    expected = read_series(tmp_path / "dicom")
    assert_same_image(image, expected)  # the series itself stores the geometry exactly
    img = read_image(tmp_path / "dicom")
    assert img.shape == (1, 6, 5, 4)
    write_image(img, tmp_path / "copy.mha")
    assert_same_image(expected, sitk.ReadImage(str(tmp_path / "copy.mha")))


def test_dicom_folder_with_two_series_reads_the_larger_and_warns(tmp_path):
    write_dicom_series(make_image("ct", IDENTITY), tmp_path / "dicom", series_uid="1.2.3.4.1")
    small = make_image("ct", IDENTITY)[:, :, :2]
    write_dicom_series(small, tmp_path / "small", series_uid="1.2.3.4.2")
    for f in (tmp_path / "small").iterdir():
        os.replace(f, tmp_path / "dicom" / f"b_{f.name}")
    with pytest.warns(UserWarning, match="2 DICOM series"):
        img = read_image(tmp_path / "dicom")
    assert img.shape == (1, 6, 5, 4)


def test_multi_component_image_round_trip(tmp_path):
    array = np.arange(4 * 5 * 6 * 2, dtype=np.float32).reshape(4, 5, 6, 2)
    image = sitk.GetImageFromArray(array, isVector=True)
    image.SetDirection(PERMUTE_XY)
    image.SetOrigin(ORIGIN)
    sitk.WriteImage(image, str(tmp_path / "vec.mha"))
    img = read_image(tmp_path / "vec.mha")
    assert img.shape == (2, 6, 5, 4)
    np.testing.assert_array_equal(img[1].numpy(), array[..., 1].T)
    write_image(img, tmp_path / "copy.mha")
    assert_same_image(sitk.ReadImage(str(tmp_path / "vec.mha")), sitk.ReadImage(str(tmp_path / "copy.mha")))


# --- get_data contract -----------------------------------------------------------------------------------------------


def test_get_data_matches_itkreader_contract(tmp_path):
    path = tmp_path / "ct.mhd"
    image = make_image("ct", PERMUTE_XY)
    sitk.WriteImage(image, str(path), True)
    reader = SimpleITKReader()
    assert reader.verify_suffix(str(path))
    array, meta = reader.get_data(reader.read(path))
    np.testing.assert_array_equal(array, sitk.GetArrayFromImage(image).T)  # (x, y, z)
    assert array.dtype == np.int16
    assert meta["original_channel_dim"] == "no_channel"
    assert meta["space"] == "RAS"
    assert meta["filename_or_obj"] == str(path)
    np.testing.assert_array_equal(meta["spatial_shape"], (6, 5, 4))
    np.testing.assert_array_equal(meta["sitk_origin"], image.GetOrigin())
    np.testing.assert_array_equal(meta["sitk_spacing"], image.GetSpacing())
    np.testing.assert_array_equal(meta["sitk_direction"], np.reshape(image.GetDirection(), (3, 3)))
    np.testing.assert_array_equal(meta["affine"], meta["original_affine"])
    for index in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:  # affine maps (x, y, z) voxel index to RAS mm
        np.testing.assert_allclose(meta["affine"] @ (*index, 1), (*ras_point(image, index), 1), atol=1e-9)


def test_lps_affine_option_and_write_back(tmp_path):
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(make_image("ct", FLIP_X), str(path))
    load = LoadImage(reader=SimpleITKReader(affine_lps_to_ras=False), image_only=True, dtype=None)
    img = load(path)
    assert img.meta["space"] == "LPS"
    assert img.affine[0, 0] == pytest.approx(-SPACING[0])  # LPS: direction -1 kept
    write_image(img, tmp_path / "copy.nrrd")
    assert_same_image(sitk.ReadImage(str(path)), sitk.ReadImage(str(tmp_path / "copy.nrrd")))


@pytest.mark.parametrize("dtype, expected", [(None, torch.int16), (np.float32, torch.float32), ("int32", torch.int32)])
def test_read_dtype(tmp_path, dtype, expected):
    sitk.WriteImage(make_image("ct"), str(tmp_path / "ct.mha"))
    assert read_image(tmp_path / "ct.mha", dtype=dtype).dtype == expected


@pytest.mark.parametrize("name, ok", [("a.mhd", True), ("a.MHA", True), ("a.nrrd", True), ("a.nii", True),
                                      ("a.nii.gz", True), ("a.png", False), ("a.raw", False), ("a.gz", False)])
def test_verify_suffix(tmp_path, name, ok):
    assert SimpleITKReader().verify_suffix(str(tmp_path / name)) is ok
    assert SimpleITKReader().verify_suffix([str(tmp_path / "b.mha"), str(tmp_path / name)]) is ok
    assert SimpleITKReader().verify_suffix(str(tmp_path)) is True  # a folder: DICOM series


def test_loadimaged_dotted_reader_path(tmp_path):
    sitk.WriteImage(make_image("ct"), str(tmp_path / "ct.mhd"), True)
    sitk.WriteImage(make_image("mask"), str(tmp_path / "mask.mhd"), True)
    chain = Compose([LoadImaged(["image", "label"], reader="transforms.io.SimpleITKReader"),
                     EnsureChannelFirstd(["image", "label"])])
    out = chain({"image": str(tmp_path / "ct.mhd"), "label": str(tmp_path / "mask.mhd")})
    assert out["image"].shape == out["label"].shape == (1, 6, 5, 4)
    assert out["image"].dtype == torch.float32  # LoadImaged's default dtype
    torch.testing.assert_close(out["image"].affine, out["label"].affine)


def test_orientation_then_save_keeps_world_positions(tmp_path):
    """Reoriented data saved through MONAI overlays the original voxel for voxel in world space."""
    source = tmp_path / "mask.mhd"
    original = make_image("mask", PERMUTE_XY)
    sitk.WriteImage(original, str(source), True)
    chain = Compose([LoadImaged("label", reader=SimpleITKReader(), dtype=None), EnsureChannelFirstd("label"),
                     Orientationd("label", axcodes="LPI")])
    out = chain({"label": str(source)})
    assert out["label"].shape[1:] == (5, 6, 4)
    SaveImage(output_dir=tmp_path, output_postfix="lpi", output_ext=".mha", output_dtype=np.uint8,
              separate_folder=False, print_log=False, writer=SimpleITKWriter)(out["label"])
    saved = sitk.ReadImage(str(tmp_path / "mask_lpi.mha"))
    back = sitk.Resample(saved, original, sitk.Transform(), sitk.sitkNearestNeighbor, 255)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(original))


def test_changed_geometry_is_written_from_the_affine_not_stale_meta(tmp_path):
    sitk.WriteImage(make_image("ct", FLIP_X), str(tmp_path / "ct.mha"))
    img = read_image(tmp_path / "ct.mha")
    cropped = SpatialCrop(roi_slices=[slice(2, 5), slice(1, 4), slice(0, 4)])(img)
    write_image(cropped, tmp_path / "crop.mha")
    written = sitk.ReadImage(str(tmp_path / "crop.mha"))
    source = sitk.ReadImage(str(tmp_path / "ct.mha"))
    np.testing.assert_allclose(written.GetOrigin(), source.TransformIndexToPhysicalPoint((2, 1, 0)), atol=TOL)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(source)[0:4, 1:4, 2:5])


def test_writer_used_directly_writes_zraw_atomically(tmp_path):
    img = read_image(_written(tmp_path, "mask", ".nii.gz"))
    writer = SimpleITKWriter(output_dtype=np.uint8)
    writer.set_data_array(img, channel_dim=0)
    writer.set_metadata(img.meta)
    writer.write(tmp_path / "out" / "mask.mhd")
    assert sorted(os.listdir(tmp_path / "out")) == ["mask.mhd", "mask.zraw"]  # no temporary leftovers
    assert "ElementDataFile = mask.zraw" in (tmp_path / "out" / "mask.mhd").read_text()
    assert_same_image(sitk.ReadImage(str(tmp_path / "mask.nii.gz")), sitk.ReadImage(str(tmp_path / "out/mask.mhd")))


def test_metatensor_sitk_conversions():
    image = make_image("ct", ROTATE_Z)
    img = sitk_to_metatensor(image)
    assert isinstance(img, MetaTensor) and img.shape == (1, 6, 5, 4)
    assert_same_image(image, metatensor_to_sitk(img))
    assert_same_image(image, metatensor_to_sitk(img[0]))  # no channel axis: (X, Y, Z)


def test_write_image_output_dtype(tmp_path):
    img = read_image(_written(tmp_path, "ct", ".mha"))
    write_image(img.float() / 1000, tmp_path / "f.nrrd")
    write_image(img > 0, tmp_path / "b.nii.gz")  # bool stored as uint8
    write_image(img, tmp_path / "u.mha", dtype=np.float32)
    assert sitk.ReadImage(str(tmp_path / "f.nrrd")).GetPixelID() == sitk.sitkFloat32
    assert sitk.ReadImage(str(tmp_path / "b.nii.gz")).GetPixelID() == sitk.sitkUInt8
    assert sitk.ReadImage(str(tmp_path / "u.mha")).GetPixelID() == sitk.sitkFloat32


# --- bad input -------------------------------------------------------------------------------------------------------


def _written(tmp_path: Path, kind: str, suffix: str, compress: bool = True) -> Path:
    path = tmp_path / f"{kind}{suffix}"
    sitk.WriteImage(make_image(kind), str(path), compress)
    return path


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _corrupt_header(tmp_path: Path) -> Path:
    path = _written(tmp_path, "ct", ".mhd")
    path.write_bytes(b"\x00\x01garbage header\xff")
    return path


def _not_an_image(tmp_path: Path) -> Path:
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is not an image")
    return path


def _missing_data_file(tmp_path: Path) -> Path:
    path = _written(tmp_path, "ct", ".mhd", compress=False)
    (tmp_path / "ct.raw").unlink()
    return path


def _truncated_raw(tmp_path: Path) -> Path:
    path = _written(tmp_path, "ct", ".mhd", compress=False)
    _truncate(tmp_path / "ct.raw")
    return path


def _truncated_zraw(tmp_path: Path) -> Path:
    path = _written(tmp_path, "mask", ".mhd")
    _truncate(tmp_path / "mask.zraw")
    return path


def _empty_folder(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


@pytest.mark.parametrize(
    "make_bad, reason",
    [
        (lambda p: p / "missing.mhd", "file not found"),
        (_missing_data_file, "is missing"),
        (_truncated_raw, "truncated"),
        (_truncated_zraw, "truncated"),
        (_corrupt_header, "header"),
        (_not_an_image, "Unable to determine ImageIO reader"),
        (_empty_folder, "no DICOM series"),
    ],
    ids=["missing", "missing-data-file", "truncated-raw", "truncated-zraw", "corrupt-header", "not-image", "no-dicom"],
)
def test_bad_files_raise_inputerror_naming_the_path(tmp_path, make_bad, reason):
    path = make_bad(tmp_path)
    with pytest.raises(InputError, match=reason) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_truncated_zraw_without_size_in_header_still_inputerror(tmp_path):
    path = _truncated_zraw(tmp_path)
    header = "\n".join(ln for ln in path.read_text().splitlines() if not ln.startswith("CompressedDataSize"))
    path.write_text(header + "\n")
    with pytest.raises(InputError, match="mask.mhd"):
        read_image(path)


def test_write_errors(tmp_path):
    img = read_image(_written(tmp_path, "ct", ".mha"))
    with pytest.raises(InputError, match="expected one of"):
        write_image(img, tmp_path / "ct.png")
    with pytest.raises(InputError, match="MetaTensor"):
        write_image(torch.zeros(4, 4, 4), tmp_path / "x.mha")
    with pytest.raises(InputError, match="expected"):
        write_image(MetaTensor(torch.zeros(1, 1, 4, 4, 4)), tmp_path / "x.mha")
    assert sorted(os.listdir(tmp_path)) == ["ct.mha"]


@pytest.mark.parametrize(
    "shape, dtype, out_dtype",
    [((37, 5, 6), np.int16, None), ((8, 3, 4), np.uint8, None), ((17, 4, 9), np.float32, np.int16),
     ((5, 6), np.float64, None), ((9, 2, 3, 2), np.int16, np.float32), ((64, 1, 1), np.uint8, np.uint8)],
)
def test_transposed_copy_equals_numpys(shape, dtype, out_dtype):
    from transforms.io import transposed_copy

    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 500).astype(dtype)
    for source in (array, array[::-1], np.asfortranarray(array)):  # contiguous, reversed-stride, Fortran order
        out = transposed_copy(source, out_dtype)
        expected = np.ascontiguousarray(source.T, dtype=out_dtype)
        assert out.flags.c_contiguous and out.dtype == expected.dtype
        np.testing.assert_array_equal(out, expected)
