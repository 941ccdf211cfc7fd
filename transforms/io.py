"""SimpleITK image I/O for MONAI: a reader for ``LoadImage`` and a writer for ``SaveImage``.

MONAI's ``ITKReader`` / ``ITKWriter`` need the ``itk`` package; this project uses SimpleITK.
:class:`SimpleITKReader` follows ``ITKReader.get_data``'s contract (array in (x, y, z) order, RAS
``affine``), so ``EnsureChannelFirstd``, ``Orientationd``, ``Spacingd``, ``Invertd`` and
``SaveImaged`` work unchanged. It also records the file's own LPS geometry (``sitk_origin``,
``sitk_spacing``, ``sitk_direction``) so that an unchanged image is written back bit-exactly. (About 480 lines:
the reader and the writer are one geometry contract and are kept together.)

Usage::

    LoadImage(reader=SimpleITKReader(), dtype=None)
    LoadImaged(keys, reader="transforms.io.SimpleITKReader")        # bundle configs
    SaveImage(output_ext=".mhd", writer="transforms.io.SimpleITKWriter", output_dtype=None)
    img = read_image("ct.mhd"); write_image(img, "mask.nii.gz", dtype=np.uint8)

Supported: .mhd (+ .raw / .zraw), .mha, .nrrd, .nii, .nii.gz and DICOM series folders (read only).
Every write is atomic: files are written under their final names in a temporary folder beside the
target and renamed into place (for .mhd: data file first, header last).

(About 480 lines: the reader and the writer share the format checks, the axis reversal and the file's stored
geometry, which round-trips exactly only if both sides read it the same way.)
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.config import DtypeLike, NdarrayOrTensor, PathLike
from monai.data import ImageReader, ImageWriter, MetaTensor
from monai.data import image_writer as _monai_writers
from monai.data.image_reader import _copy_compatible_dict, _stack_images  # ITKReader's own stacking helpers
from monai.transforms import EnsureChannelFirst
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, convert_data_type, ensure_tuple, get_equivalent_dtype

from .errors import InputError
from .geometry import lps_geometry, sitk_affine

__all__ = ["SUPPORTED_SUFFIXES", "SimpleITKReader", "SimpleITKWriter", "metatensor_to_sitk", "read_image",
           "register_writer", "sitk_to_metatensor", "transposed_copy", "write_image", "write_sitk"]

SUPPORTED_SUFFIXES = (".mhd", ".mha", ".nrrd", ".nii", ".nii.gz")
NO_CHANNEL = "no_channel"
SITK_ORIGIN, SITK_SPACING, SITK_DIRECTION = "sitk_origin", "sitk_spacing", "sitk_direction"
# Geometry derived from the affine is replaced by the file's stored LPS values when it agrees to this
# tolerance (mm / cosine units): float64 affine round trips differ by ~1e-13, any real transform by far more.
EXACT_GEOMETRY_ATOL = 1e-8
_SPATIAL_NDIM_3D = 3
# MetaImage element sizes in bytes (MetaIO metaTypes.h), used to detect truncated .raw files.
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
_UNPRINTABLE = "UNKNOWN_PRINT_CHARACTERISTICS"
# Pixel types SimpleITK cannot store, mapped to the closest one it can.
_WRITABLE_DTYPE = {np.dtype(bool): np.uint8, np.dtype(np.float16): np.float32}


#: slices of the first axis transposed per block by :func:`transposed_copy` (8 x 512 x 512 int16 = 4 MiB)
TRANSPOSE_BLOCK = 8


def transposed_copy(array: np.ndarray, dtype: DtypeLike = None) -> np.ndarray:
    """``np.ascontiguousarray(array.T, dtype)``, about 4x faster for large 3-D volumes.

    SimpleITK's arrays are (z, y, x) and MONAI's (x, y, z): every read and write of a CT reverses its
    axes. numpy's one-shot copy of a reversed 512 x 512 x 300 volume strides through memory and takes ~1 s
    on this project's 2-core test machine (half of preprocessing a LUNA16 scan); copying a few slices at a
    time keeps the source in cache (~0.25 s, ``benchmarks/preprocess.py``).

    Args:
        array: any array; 3-D ones take the blocked path.
        dtype: output dtype (``None``: the input's); values are cast as ``np.ascontiguousarray`` casts.

    Returns:
        A C-contiguous array of shape ``array.shape[::-1]``, equal to ``array.T``.
    """
    dtype = np.dtype(dtype) if dtype is not None else array.dtype
    if array.ndim != 3 or array.shape[0] <= TRANSPOSE_BLOCK:
        return np.ascontiguousarray(array.T, dtype=dtype)
    out = np.empty(array.shape[::-1], dtype=dtype)
    for start in range(0, array.shape[0], TRANSPOSE_BLOCK):
        out[..., start:start + TRANSPOSE_BLOCK] = array[start:start + TRANSPOSE_BLOCK].T
    return out


def _suffix(path: PathLike) -> str:
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _one_line(err: Exception) -> str:
    """SimpleITK's multi-line exception text reduced to its reason, on one line."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.startswith("Exception thrown in")]
    lines = [re.sub(r"^(sitk::ERROR:|ITK ERROR:\s*\w+\(0x[0-9a-f]+\):)\s*", "", ln) for ln in lines]
    return "; ".join(lines) or type(err).__name__


def _mhd_problem(path: Path) -> str | None:
    """Why the .mhd header or its data file cannot be read (SimpleITK only says "No such file"), or None."""
    try:
        text = path.read_text(encoding="ascii", errors="strict")
    except (UnicodeDecodeError, OSError) as err:
        return f"header is not a text MetaImage header ({type(err).__name__})"
    header = dict(re.findall(r"^\s*(\w+)\s*=\s*(.*?)\s*$", text, flags=re.MULTILINE))
    data_name = header.get("ElementDataFile")
    if data_name is None or "DimSize" not in header:
        return "header has no ElementDataFile/DimSize (corrupt or not a MetaImage header)"
    if data_name.upper() in ("LOCAL", "LIST") or "%" in data_name or " " in data_name:
        return None  # inline or multi-file data: leave the checks to SimpleITK
    data = path.parent / data_name
    if not data.is_file():
        return f"data file '{data}' named in the header is missing"
    size = data.stat().st_size
    try:
        channels = int(header.get("ElementNumberOfChannels", 1))
        n_values = int(np.prod([int(v) for v in header["DimSize"].split()])) * channels
    except ValueError:
        return f"header has an invalid DimSize '{header['DimSize']}'"
    raw_bytes = n_values * _MET_BYTES.get(header.get("ElementType"), 0)
    compressed = header.get("CompressedData", "False").lower() == "true"
    expected = int(header.get("CompressedDataSize", "0") or 0) if compressed else raw_bytes
    if expected and size < expected:
        return f"data file '{data}' is truncated ({size} of {expected} bytes)"
    if compressed and not expected and raw_bytes:
        # No stored size: SimpleITK silently accepts a cut zlib stream, so inflate it once to count the bytes.
        inflated, complete = _inflated_size(data)
        if not complete or inflated < raw_bytes:
            return f"data file '{data}' is truncated ({inflated} of {raw_bytes} bytes after decompression)"
    return None


def _inflated_size(path: Path, chunk: int = 1 << 20) -> tuple[int, bool]:
    """Decompressed size of a zlib file and whether its stream ended properly (streamed, little memory)."""
    inflater, total = zlib.decompressobj(), 0
    try:
        with path.open("rb") as stream:
            while block := stream.read(chunk):
                while block and not inflater.eof:  # bounded output per step: zeros inflate ~1000x
                    total += len(inflater.decompress(block, chunk))
                    block = inflater.unconsumed_tail
                if inflater.eof:
                    break
    except zlib.error:
        return total, False
    return total, inflater.eof


def _read_dicom_series(folder: Path, series_name: str = "") -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = list(reader.GetGDCMSeriesIDs(str(folder)))
    if not series:
        raise InputError(f"cannot read image '{folder}': the directory holds no DICOM series")
    if series_name:
        if series_name not in series:
            raise InputError(f"cannot read image '{folder}': DICOM series '{series_name}' not found, found {series}")
        chosen = series_name
    else:
        chosen = max(series, key=lambda s: len(reader.GetGDCMSeriesFileNames(str(folder), s)))
        if len(series) > 1:
            warnings.warn(f"'{folder}' holds {len(series)} DICOM series; reading '{chosen}' (the one with most files)")
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), chosen))
    return reader.Execute()


def _read_sitk(path: PathLike, series_name: str = "") -> sitk.Image:
    """Read one file or DICOM folder with SimpleITK; every failure becomes a one-line InputError."""
    path = Path(path)
    try:
        if path.is_dir():
            image = _read_dicom_series(path, series_name)
        else:
            if not path.is_file():
                raise InputError(f"cannot read image '{path}': file not found")
            problem = _mhd_problem(path) if _suffix(path) == ".mhd" else None
            if problem:
                raise InputError(f"cannot read image '{path}': {problem}")
            image = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise InputError(f"cannot read image '{path}': {_one_line(err)}") from err
    image.SetMetaData(ImageMetaKey.FILENAME_OR_OBJ, str(path))
    return image


def _geometry(affine: NdarrayOrTensor, d: int, lps_to_ras: bool, meta: Mapping | None) -> tuple:
    """LPS (origin, spacing, direction) of an affine; the file's stored values when they agree."""
    try:
        geometry = lps_geometry(affine, d, lps_to_ras)
    except InputError as err:
        raise InputError(f"cannot write image: {err}") from None
    names = (SITK_ORIGIN, SITK_SPACING, SITK_DIRECTION)
    if meta is not None and all(np.size(meta.get(k, ())) == g.size for k, g in zip(names, geometry)):
        stored = tuple(np.asarray(meta[k], dtype=np.float64).reshape(g.shape) for k, g in zip(names, geometry))
        if all(np.allclose(s, g, rtol=0, atol=EXACT_GEOMETRY_ATOL) for s, g in zip(stored, geometry)):
            geometry = stored
    origin, spacing, direction = geometry
    return tuple(map(float, origin)), tuple(map(float, spacing)), tuple(map(float, direction.ravel()))


def _lps_to_ras_flag(flag: bool | None, meta: Mapping | None) -> bool:
    if flag is not None:
        return flag
    return (meta or {}).get(MetaKeys.SPACE, SpaceKeys.RAS) != SpaceKeys.LPS


def _array_to_sitk(array: NdarrayOrTensor, is_vector: bool, affine: NdarrayOrTensor | None, dtype: DtypeLike,
                   lps_to_ras: bool, meta: Mapping | None = None) -> sitk.Image:
    """Channel-last (x, y, z[, c]) array + RAS (or LPS) affine -> sitk.Image with LPS geometry."""
    data = convert_data_type(array, np.ndarray)[0]
    out_dtype = np.dtype(get_equivalent_dtype(dtype, np.ndarray) if dtype is not None else data.dtype)
    out_dtype = np.dtype(_WRITABLE_DTYPE.get(out_dtype, out_dtype))
    d = data.ndim - 1 if is_vector else data.ndim
    if is_vector:  # (x, y, z[, c]) -> (z, y, x[, c]) for SimpleITK
        zyx = np.ascontiguousarray(np.moveaxis(data, -1, 0).T, dtype=out_dtype)
    else:
        zyx = transposed_copy(data, out_dtype)
    image = sitk.GetImageFromArray(zyx, isVector=is_vector)
    if affine is None:
        affine = np.eye(d + 1)
    origin, spacing, direction = _geometry(affine, d, lps_to_ras, meta)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def write_sitk(image: sitk.Image, path: PathLike, compression: bool = True) -> None:
    """Write a SimpleITK image atomically: under the final name(s) in a temporary folder beside ``path``, then
    rename into place (data file first, then the header for .mhd).

    Args:
        image: the image (its origin, spacing and direction are written as they are).
        path: target file (.mhd, .mha, .nrrd, .nii, .nii.gz).
        compression: compress the voxel data.
    """
    target = Path(path)
    if _suffix(target) not in SUPPORTED_SUFFIXES:
        raise InputError(f"cannot write image '{target}': expected one of {SUPPORTED_SUFFIXES}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        sitk.WriteImage(image, str(tmp_dir / target.name), compression)
        # data file(s) first, the header (final name) last: a reader never sees a header without its data
        for written in sorted(tmp_dir.iterdir(), key=lambda p: p.name == target.name):
            os.replace(written, target.parent / written.name)
    except RuntimeError as err:
        raise InputError(f"cannot write image '{target}': {_one_line(err)}") from err
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


class SimpleITKReader(ImageReader):
    """Load images with SimpleITK, matching MONAI ``ITKReader``'s output (without the ``itk`` package).

    Args:
        channel_dim: channel axis of the file's data; None: "no_channel" for scalar images, -1 for vector images.
        series_name: DICOM series UID to read from a folder; "" = the series with the most files (warns if several).
        affine_lps_to_ras: convert ITK's LPS affine to RAS (MONAI's convention). Default True.
        dtype: numpy dtype of the returned array; None keeps the file's (int16 stays int16, uint8 stays uint8).
            Note ``LoadImage`` casts to its own ``dtype`` (float32 unless ``dtype=None`` is passed to it).
        kwargs: ignored (accepted so ``LoadImage(reader=..., **kwargs)`` can build the reader).

    Raises:
        InputError: on read, for a missing path, a .mhd with a missing or truncated data file, a corrupt header,
            a non-image file or a folder without DICOM series; the message names the path and the reason.
    """

    def __init__(self, channel_dim: str | int | None = None, series_name: str = "", affine_lps_to_ras: bool = True,
                 dtype: DtypeLike = None, **kwargs: Any) -> None:
        super().__init__()
        self.channel_dim = NO_CHANNEL if channel_dim == NO_CHANNEL else channel_dim
        self.series_name = series_name
        self.affine_lps_to_ras = affine_lps_to_ras
        self.dtype = dtype

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True when every name is a DICOM folder or ends in one of :data:`SUPPORTED_SUFFIXES`."""
        return all(Path(f).is_dir() or _suffix(f) in SUPPORTED_SUFFIXES for f in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> sitk.Image | list[sitk.Image]:
        """Read one path (file or DICOM folder) or several (stacked as channels by :meth:`get_data`)."""
        names = ensure_tuple(data)
        images = [_read_sitk(name, kwargs.get("series_name", self.series_name)) for name in names]
        return images if len(names) > 1 else images[0]

    def get_data(self, img: sitk.Image | Sequence[sitk.Image]) -> tuple[np.ndarray, dict]:
        """Array in (x, y, z[, c]) order (transpose of ``sitk.GetArrayFromImage``) and its meta dict.

        Meta keys: ``affine``/``original_affine`` ((d+1, d+1) RAS, float64), ``spatial_shape``, ``space``,
        ``original_channel_dim``, ``spacing``, ``filename_or_obj``, ``sitk_origin``/``sitk_spacing``/
        ``sitk_direction`` (the file's LPS values, direction as a (d, d) matrix), plus the file's own
        non-``ITK_`` metadata strings. Several images are stacked on a new first (channel) axis.
        """
        arrays, meta = [], {}
        for image in [img] if isinstance(img, sitk.Image) else list(img):  # sitk.Image is iterable (pixels)
            d = image.GetDimension()
            array = sitk.GetArrayFromImage(image)
            scalar = image.GetNumberOfComponentsPerPixel() == 1
            array = transposed_copy(array) if scalar else np.moveaxis(array.T, 0, -1)
            if self.dtype is not None:
                array = array.astype(get_equivalent_dtype(self.dtype, np.ndarray), copy=False)
            arrays.append(array)
            header = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys() if not k.startswith("ITK_")}
            header = {k: v for k, v in header.items() if _UNPRINTABLE not in v}  # values SimpleITK cannot show
            header["spacing"] = np.asarray(image.GetSpacing())
            header[SITK_ORIGIN] = np.asarray(image.GetOrigin())
            header[SITK_SPACING] = np.asarray(image.GetSpacing())
            header[SITK_DIRECTION] = np.asarray(image.GetDirection()).reshape(d, d)
            header[MetaKeys.ORIGINAL_AFFINE] = sitk_affine(image, self.affine_lps_to_ras)
            header[MetaKeys.SPACE] = SpaceKeys.RAS if self.affine_lps_to_ras else SpaceKeys.LPS
            header[MetaKeys.AFFINE] = header[MetaKeys.ORIGINAL_AFFINE].copy()
            header[MetaKeys.SPATIAL_SHAPE] = np.asarray(image.GetSize())
            if self.channel_dim is None:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = NO_CHANNEL if scalar else -1
            else:
                header[MetaKeys.ORIGINAL_CHANNEL_DIM] = self.channel_dim
            _copy_compatible_dict(header, meta)
        return _stack_images(arrays, meta), meta


class SimpleITKWriter(ImageWriter):
    """Write images with SimpleITK, converting MONAI's RAS affine back to LPS origin/spacing/direction.

    Writes .mhd (compressed data -> .zraw), .mha, .nrrd, .nii, .nii.gz, atomically. Pass it to ``SaveImage(d)`` as
    ``writer`` (or call :func:`register_writer` once to make MONAI pick it by extension); also usable directly::

        writer = SimpleITKWriter(output_dtype=np.uint8)
        writer.set_data_array(mask, channel_dim=0)      # (1, X, Y, Z) channel-first
        writer.set_metadata(mask.meta)                  # affine; resamples to original_affine if it differs
        writer.write("mask.mhd")

    Args:
        output_dtype: stored pixel type; None keeps the data's (bool -> uint8, float16 -> float32).
        affine_lps_to_ras: the affine is RAS (True) or already LPS (False); None: read meta ``space`` (default RAS).
        compression: compress the data (.zraw, .mha, .nrrd, .nii.gz). Default True.
        kwargs: stored as attributes (``SaveImage`` passes ``scale``, unused here).
    """

    def __init__(self, output_dtype: DtypeLike = None, affine_lps_to_ras: bool | None = None,
                 compression: bool = True, **kwargs: Any) -> None:
        super().__init__(output_dtype=output_dtype, affine_lps_to_ras=affine_lps_to_ras, compression=compression,
                         affine=None, channel_dim=0, meta=None, **kwargs)

    def set_data_array(self, data_array: NdarrayOrTensor, channel_dim: int | None = 0, squeeze_end_dims: bool = True,
                       **kwargs: Any) -> None:
        """Store ``data_array`` channel-last, as ``ITKWriter.set_data_array`` does (channel_dim None: no channel)."""
        n_channels = data_array.shape[channel_dim] if channel_dim is not None else 0
        self.data_obj = self.convert_to_channel_last(
            data=data_array, channel_dim=channel_dim, squeeze_end_dims=squeeze_end_dims,
            spatial_ndim=kwargs.pop("spatial_ndim", _SPATIAL_NDIM_3D), contiguous=kwargs.pop("contiguous", False))
        self.channel_dim = -1
        if squeeze_end_dims and n_channels <= 1:
            self.channel_dim = None
        if not squeeze_end_dims and n_channels < 1:
            self.channel_dim = None
            self.data_obj = self.data_obj[..., 0]

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = True, **options: Any) -> None:
        """Take the affine from ``meta_dict``; resample to ``original_affine``/``spatial_shape`` only if they differ.

        Resampling (``options``: mode, padding_mode, align_corners, dtype) uses MONAI's
        ``ImageWriter.resample_if_needed``; an image already on its original grid is not touched, so voxel
        values stay exact.
        """
        self.meta = meta_dict
        original_affine, affine, spatial_shape = self.get_meta_info(meta_dict)
        if self.output_dtype is None and hasattr(self.data_obj, "dtype"):
            self.output_dtype = self.data_obj.dtype
        self.affine = affine
        spatial = tuple(self.data_obj.shape[: self.data_obj.ndim - (self.channel_dim is not None)])
        on_original_grid = original_affine is None or (
            affine is not None
            and np.allclose(np.asarray(affine), np.asarray(original_affine), rtol=0, atol=EXACT_GEOMETRY_ATOL)
            and (spatial_shape is None or tuple(np.asarray(spatial_shape).tolist()) == spatial))
        if resample and not on_original_grid:
            self.data_obj, self.affine = self.resample_if_needed(
                data_array=self.data_obj, affine=affine, target_affine=original_affine,
                output_spatial_shape=spatial_shape, mode=options.pop("mode", "bilinear"),
                padding_mode=options.pop("padding_mode", "border"), align_corners=options.pop("align_corners", False),
                dtype=options.pop("dtype", np.float64))

    def write(self, filename: PathLike, verbose: bool = False, **kwargs: Any) -> None:
        """Write atomically to ``filename`` (format from its suffix; ``compression`` may be overridden here)."""
        super().write(filename, verbose=verbose)
        image = self.create_backend_obj(self.data_obj, channel_dim=self.channel_dim, affine=self.affine,
                                        dtype=self.output_dtype, affine_lps_to_ras=self.affine_lps_to_ras,
                                        meta=self.meta)
        write_sitk(image, filename, kwargs.pop("compression", self.compression))

    @classmethod
    def create_backend_obj(cls, data_array: NdarrayOrTensor, channel_dim: int | None = 0,
                           affine: NdarrayOrTensor | None = None, dtype: DtypeLike = None,
                           affine_lps_to_ras: bool | None = None, meta: Mapping | None = None,
                           **kwargs: Any) -> sitk.Image:
        """Channel-last array -> ``sitk.Image`` (vector image when ``channel_dim`` is not None)."""
        if isinstance(data_array, MetaTensor) and meta is None:
            meta = data_array.meta
        return _array_to_sitk(data_array, channel_dim is not None, affine, dtype,
                              _lps_to_ras_flag(affine_lps_to_ras, meta), meta)


def register_writer() -> None:
    """Make MONAI's ``SaveImage`` / ``SaveImaged`` pick :class:`SimpleITKWriter` for .mhd .mha .nrrd .nii .nii.gz.

    MONAI chooses a writer by file extension from a process-wide table; this puts ours first for our suffixes and
    keeps MONAI's defaults for all others. Nothing calls it on import (it changes that table for the whole process):
    call it once in your script, or pass ``writer=SimpleITKWriter`` (``"transforms.SimpleITKWriter"`` in a bundle
    config) to ``SaveImage`` instead, as this project's configs do.
    """
    if not _monai_writers.SUPPORTED_WRITERS:
        _monai_writers.init()  # resolve_writer only calls init() on an empty registry: fill it first
    for suffix in SUPPORTED_SUFFIXES:
        current = _monai_writers.SUPPORTED_WRITERS.get(suffix[1:], ())
        if not current or getattr(current[0], "__qualname__", "") != SimpleITKWriter.__qualname__:
            _monai_writers.register_writer(suffix[1:], SimpleITKWriter)


def _to_metatensor(array: np.ndarray, meta: dict) -> MetaTensor:
    return EnsureChannelFirst()(MetaTensor.ensure_torch_and_prune_meta(array, meta))  # as LoadImage does


def read_image(path: PathLike, dtype: DtypeLike = None) -> MetaTensor:
    """Read a file or DICOM folder as a channel-first MetaTensor (1, X, Y, Z) with RAS affine.

    Args:
        path: .mhd/.mha/.nrrd/.nii/.nii.gz file or DICOM series folder.
        dtype: numpy dtype of the data; None keeps the file's.

    Raises:
        InputError: the path cannot be read (message names it and why).
    """
    reader = SimpleITKReader(dtype=dtype)
    return _to_metatensor(*reader.get_data(reader.read(path)))


def _split_channels(img: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(X, Y, Z) or (C, X, Y, Z) -> channel-last data and whether it is a vector image."""
    if img.ndim == _SPATIAL_NDIM_3D:
        return img, False
    if img.ndim == _SPATIAL_NDIM_3D + 1:
        return (img[0], False) if img.shape[0] == 1 else (torch.movedim(img, 0, -1), True)
    raise InputError(f"image of shape {tuple(img.shape)}: expected (X, Y, Z) or channel-first (C, X, Y, Z)")


def metatensor_to_sitk(img: MetaTensor, dtype: DtypeLike = None) -> sitk.Image:
    """MetaTensor (X, Y, Z) or (C, X, Y, Z) with affine (meta ``space``, default RAS) -> sitk.Image (LPS)."""
    if not isinstance(img, MetaTensor):
        raise InputError(f"expected a MetaTensor with an affine, got {type(img).__name__}")
    data, is_vector = _split_channels(img.as_tensor())
    return _array_to_sitk(data, is_vector, img.affine, dtype, _lps_to_ras_flag(None, img.meta), img.meta)


def sitk_to_metatensor(image: sitk.Image) -> MetaTensor:
    """sitk.Image -> channel-first MetaTensor (C, X, Y, Z), meta as :meth:`SimpleITKReader.get_data`."""
    return _to_metatensor(*SimpleITKReader().get_data(image))


def write_image(img: MetaTensor, path: PathLike, dtype: DtypeLike = None, compression: bool = True) -> None:
    """Write a MetaTensor ((X, Y, Z) or (C, X, Y, Z), RAS affine) atomically; suffix picks the format.

    Args:
        img: image with its affine; with unchanged geometry the file's stored LPS values are written exactly.
        path: target file (.mhd -> + .zraw, .mha, .nrrd, .nii, .nii.gz).
        dtype: stored pixel type; None keeps the tensor's.
        compression: compress the voxel data.

    Raises:
        InputError: unsupported suffix, bad shape, or SimpleITK cannot write the file.
    """
    write_sitk(metatensor_to_sitk(img, dtype), path, compression)
