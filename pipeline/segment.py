"""Segment the lungs in chest CTs: any CT in, a lung mask in the CT's own geometry out, plus volumes and a QC picture.

Command line: ``python -m pipeline segment ct.mhd dicom_series/ scans/ --out masks/ [--labels binary]``. Python::

    segmenter = LungSegmenter("bundle/models/model.pt")   # loaded once; nothing is ever downloaded
    result = segmenter.segment("ct.nii.gz")               # result.mask (sitk.Image), result.stats; writes nothing
    segmenter.segment_file("ct.nii.gz", "masks/")          # mask, <name>_qc.png and a lung_stats.csv row

Per CT:

1. **Read and check** before any compute (:func:`pipeline.qc.read_ct`): 3-D scalar image, spacing present and in
   (0, 20] mm, orthogonal direction matrix, values in Hounsfield units (air is -1000 HU).
2. **Preprocess** as :func:`pipeline.presets.image_transforms` (RAS, ``vox_spacing`` grid, HU window and
   normalisation from the bundle config). Its own ``Orientationd`` / ``Spacingd``, run lazily, give the grid
   (shape and affine, exactly MONAI's); SimpleITK resamples the file's voxels onto it (trilinear, border
   padding: the same values to float rounding, without the eager chain's full-resolution transposed and float
   copies, ~2.5 s and ~1 GB for a 512x512x300 CT).
3. **Network**: sliding window (``roi_size``, ``sw_overlap``, Gaussian blending); lung = argmax > 0.
4. **Left / right** on the network grid (:func:`pipeline.qc.assign_sides`): the two largest components are the
   lungs; the one whose centroid lies further to the patient's right in world coordinates (larger RAS x,
   direction matrix honoured) is the right lung (1), the other the left (2). Touching lungs are separated by
   erosion, else by the mid-sagittal plane through the lung centroid.
5. **Postprocessing** (``--no-postprocess`` turns it off): per lung, the largest component, holes filled.
6. **Back to the input's geometry**: SimpleITK nearest-neighbour resampling of the uint8 labels with the input
   as reference, so origin, spacing, direction and size are exactly the input's.
"""

from __future__ import annotations

import argparse
import logging
import re
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.data.utils import orientation_ras_lps
from monai.inferers import SlidingWindowInferer
from monai.transforms import Orientationd, Spacingd

from networks.fuse import fold_batch_norms
from pipeline.device import DEVICE_CHOICES, DeviceError, autocast, setup_device
from pipeline.files import load_checkpoint
from pipeline.inputs import IMAGE_SUFFIXES, find_ct_inputs
from pipeline.presets import image_transforms, output_path_like_input
from pipeline.qc import (
    LungStats,
    assign_sides,
    check_image,
    lung_stats,
    postprocess_sides,
    read_ct,
    stats_row,
    update_stats_csv,
    write_qc_png,
)
from transforms import metatensor_to_sitk
from transforms.errors import InputError
from transforms.functional import HU_MAX, HU_MIN, LUNA16_HU_MEAN, LUNA16_HU_STD, LUNG
from transforms.io import write_sitk  # SimpleITK image -> file, atomically (see _write_mask)

__all__ = ["DEFAULT_CONFIG", "DEFAULT_MODEL", "LABEL_CHOICES", "STATS_CSV", "CaseResult", "LungSegmenter",
           "SegmentSettings", "Segmentation", "add_parser", "load_model", "load_settings", "output_paths",
           "segment_inputs"]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "bundle" / "configs" / "inference.json"
DEFAULT_MODEL = REPO_ROOT / "bundle" / "models" / "model.pt"
LABEL_CHOICES = ("left-right", "binary")
STATS_CSV = "lung_stats.csv"
QC_POSTFIX = "_qc.png"
MASK_POSTFIX = "_lung"
_TORCHSCRIPT_MARK = "/code/__torch__/"  # member path present in every torch.jit.save archive


@dataclass(frozen=True)
class SegmentSettings:
    """Inference hyperparameters (defaults = ``bundle/configs/inference.json``).

    Attributes:
        vox_spacing: network grid spacing, mm (one value or (x, y, z)).
        roi_size: sliding-window size (X, Y, Z), voxels, multiples of 16 for the V-Net.
        sw_batch_size: windows per forward pass.
        sw_overlap: window overlap fraction in [0, 1).
        hu_window, hu_mean, hu_std: HU clip window and normalisation ``(HU - mean) / std``.
    """

    vox_spacing: float | tuple[float, ...] = 2.5
    roi_size: tuple[int, ...] = (80, 80, 64)
    sw_batch_size: int = 4
    sw_overlap: float = 0.0
    hu_window: tuple[float, float] = (HU_MIN, HU_MAX)
    hu_mean: float = LUNA16_HU_MEAN
    hu_std: float = LUNA16_HU_STD


def _parser(config: str | Path | Sequence[str | Path]):
    """A MONAI ConfigParser over one config or several (later files override earlier ones, like bundle overlays)."""
    from monai.bundle import ConfigParser

    paths = [Path(c) for c in ([config] if isinstance(config, (str, Path)) else config)]
    for path in paths:
        if not path.is_file():
            raise InputError(f"config '{path}' does not exist (expected a bundle config such as {DEFAULT_CONFIG.name})")
    parser = ConfigParser()
    try:
        parser.read_config([str(p) for p in paths])
    except ValueError as e:
        raise InputError(f"config {', '.join(map(str, paths))} cannot be read: {str(e).splitlines()[0]}") from e
    return parser


def load_settings(config: str | Path | Sequence[str | Path] = DEFAULT_CONFIG) -> SegmentSettings:
    """:class:`SegmentSettings` from a bundle config; keys it lacks keep the defaults."""
    parser, values = _parser(config), {}
    for key in ("vox_spacing", "roi_size", "sw_batch_size", "sw_overlap", "hu_window", "hu_mean", "hu_std"):
        if key in parser:
            value = parser.get_parsed_content(key)
            values[key] = tuple(value) if isinstance(value, (list, tuple)) else value
    return SegmentSettings(**values)


def _is_torchscript(path: Path) -> bool:
    return zipfile.is_zipfile(path) and any(_TORCHSCRIPT_MARK in n for n in zipfile.ZipFile(path).namelist())


def _state_dict(checkpoint: object, path: Path) -> dict:
    """The weights of a plain state dict, or of a ``{"model": ...}`` checkpoint (MONAI CheckpointSaver)."""
    if isinstance(checkpoint, dict):
        for key in ("model", "network", "state_dict"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise InputError(f"model '{path}' holds no state dict (expected parameter name -> tensor, or {{'model': ...}})")
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in checkpoint.items()}


def load_model(model: str | Path = DEFAULT_MODEL, config: str | Path | Sequence[str | Path] = DEFAULT_CONFIG,
               device: torch.device | str = "cpu") -> torch.nn.Module:
    """The network in eval mode: a TorchScript file (``ckpt_export``'s model.ts) or a state dict + ``network_def``.

    A state dict is loaded with ``torch.load(weights_only=True)`` into the config's ``network_def``, built on the
    ``meta`` device (no time spent on a random initialisation that the weights replace).

    Raises:
        InputError: the file is missing or unreadable, or its weights do not fit ``network_def``.
    """
    path = Path(model)
    if not path.is_file():
        raise InputError(f"model '{path}' does not exist: train one (python -m pipeline train) or pass --model PATH"
                         " (a state dict .pt or a TorchScript .ts); nothing is downloaded")
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location=device).eval()
        except RuntimeError as e:
            raise InputError(f"model '{path}' is not a loadable TorchScript file: {str(e).splitlines()[0]}") from e
    state = _state_dict(load_checkpoint(path), path)
    parser = _parser(config)
    if "network_def" not in parser:
        raise InputError(f"config '{config}' has no 'network_def' to build the network for the weights '{path}'")
    with torch.device("meta"):
        net = parser.get_parsed_content("network_def", instantiate=True)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        reason = " ".join(str(e).split())[:300]
        raise InputError(f"model '{path}' does not fit network_def of '{config}': {reason}") from e
    if any(t.is_meta for t in (*net.parameters(), *net.buffers())):
        raise InputError(f"model '{path}' leaves tensors of network_def in '{config}' unset")
    return fold_batch_norms(net.to(device), inplace=True)  # inference only: the same function, ~4 % faster


def _ras_affine(image: sitk.Image) -> np.ndarray:
    """4x4 RAS affine (voxel (x, y, z) index -> world mm) of a SimpleITK image, as SimpleITKReader builds it."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    return orientation_ras_lps(lps)


def _lps_geometry(affine: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """(origin, spacing, row-major direction) in LPS from a 4x4 RAS affine."""
    lps = orientation_ras_lps(np.asarray(affine, dtype=np.float64))
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return lps[:3, 3].tolist(), spacing.tolist(), (lps[:3, :3] / spacing).ravel().tolist()


def _grid_image(array_xyz: np.ndarray, affine: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.T))
    origin, spacing, direction = _lps_geometry(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


@dataclass
class Segmentation:
    """One segmented CT.

    Attributes:
        mask: uint8 labels in the input's geometry (1 right, 2 left; or 1 lung for ``labels="binary"``).
        image: the CT as read (SimpleITK, HU).
        stats: volumes and mean HU per lung.
        timings: seconds per stage: ``load``, ``preprocess``, ``network``, ``invert_postprocess``.
        notes: warnings for the user (e.g. how touching lungs were split, no lung found).
    """

    mask: sitk.Image
    image: sitk.Image
    stats: LungStats
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class CaseResult:
    """Outcome of one input: ``status`` is ``"done"``, ``"skipped"`` or ``"failed"`` (``message`` says why)."""

    source: str
    status: str
    output: str = ""
    message: str = ""
    runtime_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


class LungSegmenter:
    """Lung segmentation for researchers: the model is loaded once, then any number of CTs are segmented.

    Args:
        model: a state dict ``.pt`` (built with the config's ``network_def``), a TorchScript ``.ts``, or an
            ``nn.Module`` returning (N, C, X, Y, Z) logits. Default ``bundle/models/model.pt``.
        config: bundle config with the hyperparameters (:class:`SegmentSettings`) and ``network_def``.
        device: ``auto``, ``cpu``, ``cuda`` or ``npu`` (see :func:`pipeline.device.setup_device`).
        labels: ``"left-right"`` (1 right lung, 2 left lung) or ``"binary"`` (1 lung).
        batch_size: sliding-window batch size (default: the config's ``sw_batch_size``).
        overlap: sliding-window overlap in [0, 1) (default: the config's ``sw_overlap``).
        postprocess: keep the largest component per lung and fill holes.
        amp: autocast (bfloat16 on CPU, float16 on accelerators) for the network.

    Raises:
        InputError: bad argument, missing or unreadable model/config, unusable device.
    """

    def __init__(self, model: str | Path | torch.nn.Module = DEFAULT_MODEL, config: str | Path | Sequence[str | Path] = DEFAULT_CONFIG,
                 device: str = "auto", labels: str = "left-right", batch_size: int | None = None,
                 overlap: float | None = None, postprocess: bool = True, amp: bool = False) -> None:
        if labels not in LABEL_CHOICES:
            raise InputError(f"labels {labels!r}: expected one of {', '.join(LABEL_CHOICES)}")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
            raise InputError(f"batch size {batch_size!r}: expected a positive integer")
        if overlap is not None and not 0.0 <= overlap < 1.0:
            raise InputError(f"overlap {overlap!r}: expected a fraction in [0, 1)")
        try:
            self.device = setup_device(device)
        except DeviceError as e:
            raise InputError(str(e)) from e
        self.settings = load_settings(config)
        self.labels, self.postprocess, self.amp = labels, postprocess, amp
        if isinstance(model, torch.nn.Module):
            self.network = fold_batch_norms(model).to(self.device)  # a folded copy: the caller's model is untouched
        else:
            self.network = load_model(model, config, self.device)
        self.inferer = SlidingWindowInferer(
            roi_size=self.settings.roi_size, sw_batch_size=int(batch_size or self.settings.sw_batch_size),
            overlap=self.settings.sw_overlap if overlap is None else overlap, mode="gaussian")
        s = self.settings
        xf = image_transforms(spacing=s.vox_spacing, hu_window=s.hu_window, mean=s.hu_mean, std=s.hu_std, load=False)
        self._spatial = [t for t in xf.transforms if isinstance(t, (Orientationd, Spacingd))]
        self._intensity = [t for t in xf.transforms if not isinstance(t, (Orientationd, Spacingd))]
        for t in self._spatial:
            t.lazy = True  # shape and affine only: the voxels are resampled by SimpleITK (module docstring, step 2)

    def preprocess(self, image: sitk.Image) -> MetaTensor:
        """(1, X, Y, Z) float32 normalised CT on the network grid, RAS affine (see module docstring, step 2)."""
        size = tuple(image.GetSize())
        placeholder = MetaTensor(torch.zeros(1, 1, 1, 1).expand(1, *size), affine=torch.as_tensor(_ras_affine(image)))
        data = {"image": placeholder}
        for t in self._spatial:
            data = t(data)
        shape = [int(n) for n in data["image"].peek_pending_shape()]
        affine = np.asarray(data["image"].peek_pending_affine(), dtype=np.float64)
        origin, spacing, direction = _lps_geometry(affine)
        resample = sitk.ResampleImageFilter()
        resample.SetSize(shape)
        resample.SetOutputOrigin(origin)
        resample.SetOutputSpacing(spacing)
        resample.SetOutputDirection(direction)
        resample.SetInterpolator(sitk.sitkLinear)
        resample.SetOutputPixelType(sitk.sitkFloat32)
        resample.SetUseNearestNeighborExtrapolator(True)  # MONAI's padding_mode="border"
        resampled = resample.Execute(image)  # keep a reference: the array view below borrows its buffer
        array = np.ascontiguousarray(sitk.GetArrayViewFromImage(resampled).T)
        data = {"image": MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(affine))}
        for t in self._intensity:
            data = t(data)
        return data["image"]

    def predict(self, image: MetaTensor) -> np.ndarray:
        """(X, Y, Z) boolean lung mask on the network grid from a preprocessed (1, X, Y, Z) image."""
        with torch.inference_mode(), autocast(self.device, enabled=self.amp):
            logits = self.inferer(image.as_tensor()[None].to(self.device), self.network)
        lung = logits[0, 0] > 0 if logits.shape[1] == 1 else logits[0].argmax(0) > 0
        return lung.cpu().numpy()

    def segment(self, source: str | Path | sitk.Image | MetaTensor) -> Segmentation:
        """Segment one CT (a path, a SimpleITK image or a MetaTensor (1, X, Y, Z) with affine); writes nothing."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        notes: list[str] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if isinstance(source, sitk.Image):
                image = source
                check_image(image, "<in-memory image>")
            elif isinstance(source, MetaTensor):
                image = metatensor_to_sitk(source)
                check_image(image, str(source.meta.get("filename_or_obj", "<in-memory image>")))
            else:
                image = read_ct(source)
            timings["load"], t0 = time.perf_counter() - t0, time.perf_counter()
            grid = self.preprocess(image)
            timings["preprocess"], t0 = time.perf_counter() - t0, time.perf_counter()
            lung = self.predict(grid)
            timings["network"], t0 = time.perf_counter() - t0, time.perf_counter()
        notes += [str(w.message).splitlines()[0] for w in caught if issubclass(w.category, UserWarning)
                  and "DICOM series" in str(w.message)]
        affine = np.asarray(grid.affine, dtype=np.float64)
        labels, how = assign_sides(lung, affine)
        if how == "empty":
            notes.append("no lung found")
        elif how != "components":
            notes.append(f"the lungs touch: left and right were separated by the {how}")
        if self.postprocess:
            postprocess_sides(labels)
        mask = sitk.Resample(_grid_image(labels, affine), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                             sitk.sitkUInt8)
        stats = lung_stats(image, mask)
        if self.labels == "binary":
            mask = sitk.Cast(mask > 0, sitk.sitkUInt8) * LUNG
        timings["invert_postprocess"] = time.perf_counter() - t0
        return Segmentation(mask, image, stats, timings, notes)

    def segment_file(self, source: str | Path, out_dir: str | Path, overwrite: bool = False,
                     qc: bool = True) -> CaseResult:
        """Segment one input and write ``<name>_lung.<ext>``, ``<name>_qc.png`` and its ``lung_stats.csv`` row.

        Inputs whose mask (and QC picture, with ``qc``) exist are skipped unless ``overwrite``. Never raises for
        a bad input: the result says ``failed`` and why.
        """
        out, png = output_paths(source, out_dir)
        if not overwrite and Path(out).is_file() and (not qc or png.is_file()):
            return CaseResult(str(source), "skipped", out)
        t0 = time.perf_counter()
        try:
            seg = self.segment(source)
            t1 = time.perf_counter()
            _write_mask(seg.mask, out)
            if qc:
                s = seg.stats
                title = (f"{Path(source).name}: right {s.right_ml:.0f} mL, left {s.left_ml:.0f} mL, "
                         f"total {s.total_ml:.0f} mL" + (f" ({'; '.join(seg.notes)})" if seg.notes else ""))
                write_qc_png(png, seg.image, seg.mask, title, binary=self.labels == "binary")
            seg.timings["write"] = time.perf_counter() - t1
            runtime = time.perf_counter() - t0
            update_stats_csv(Path(out_dir) / STATS_CSV, stats_row(str(source), out, seg.stats, runtime, self.labels))
        except InputError as e:
            return CaseResult(str(source), "failed", out, str(e), time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - one broken case must not stop the batch; say what happened
            logger.debug("segmenting '%s' failed", source, exc_info=True)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return CaseResult(str(source), "failed", out, f"'{source}': {type(e).__name__}: {first}",
                              time.perf_counter() - t0)
        return CaseResult(str(source), "done", out, "; ".join(seg.notes), runtime, seg.timings)


def output_paths(source: str | Path, out_dir: str | Path) -> tuple[str, Path]:
    """(mask path like the input: DICOM gives NIfTI, QC picture ``<name>_qc.png``) in ``out_dir``."""
    name = Path(str(source).rstrip("/\\")).name
    stem = next((name[: -len(s)] for s in IMAGE_SUFFIXES if name.lower().endswith(s)), name)
    return output_path_like_input(str(source), str(out_dir), MASK_POSTFIX), Path(out_dir) / f"{stem}{QC_POSTFIX}"


def _write_mask(mask: sitk.Image, path: str) -> None:
    """Write the SimpleITK mask atomically as it is (``transforms.io``'s writer): a ``write_image`` round trip
    through a MetaTensor would transpose two full-size copies for nothing."""
    write_sitk(mask, path)


def segment_inputs(inputs: Sequence[str | Path], out_dir: str | Path, segmenter: LungSegmenter,
                   overwrite: bool = False, qc: bool = True, progress: bool = True) -> list[CaseResult]:
    """Segment every CT found in ``inputs`` (files, DICOM folders, folders of either) one after another.

    A bad input (missing, unreadable, failing :func:`check_image`, colliding output name) is logged as one
    ``failed: ...`` line and the run goes on. Returns one :class:`CaseResult` per input found (or not found).
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    results: list[CaseResult] = []
    sources: list[str] = []
    out_root = Path(out_dir).resolve()
    warn = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # GDCM's "No Series were found" for every plain folder
    try:
        for item in inputs:
            try:
                found = find_ct_inputs(item)
            except InputError as e:
                results.append(CaseResult(str(item), "failed", message=str(e)))
                logger.error(f"failed: {e}")
                continue
            # our own outputs, when --out lies inside an input folder, are not inputs
            sources += [s for s in found if s not in sources and out_root not in Path(s).resolve().parents]
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warn)
    claimed: dict[str, str] = {}
    with logging_redirect_tqdm(), tqdm(sources, desc="segment", unit="CT", disable=not progress) as bar:
        for source in bar:
            out = output_paths(source, out_dir)[0]
            if out in claimed:
                result = CaseResult(source, "failed", out, f"'{source}': output '{out}' is already taken by "
                                    f"'{claimed[out]}' (same name): rename one of them or segment it separately")
            else:
                claimed[out] = source
                result = segmenter.segment_file(source, out_dir, overwrite=overwrite, qc=qc)
            results.append(result)
            if result.status == "failed":
                logger.error("failed: " + " ".join(result.message.split()))
            elif result.message:
                logger.warning(f"'{source}': {result.message}")
    return results


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``python -m pipeline segment``."""
    p = sub.add_parser("segment", help="segment lungs in CTs (mask in the CT's geometry, volumes, QC picture)",
                       description=(__doc__ or "").split("\n\n")[0] + " Nothing is downloaded.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=f"CT files ({', '.join(IMAGE_SUFFIXES)}), DICOM series folders, or folders of either")
    p.add_argument("--out", required=True, help="output folder (masks, <name>_qc.png, lung_stats.csv)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="state dict .pt or TorchScript .ts"
                   " (default: bundle/models/model.pt)")
    p.add_argument("--config", nargs="+", default=[str(DEFAULT_CONFIG)], help="bundle config(s) with network_def and"
                   " inference settings, later ones overriding earlier ones (default: bundle/configs/inference.json;"
                   " e.g. bundle/configs/inference.json bundle/configs/quick_inference.json for the quickstart model)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="where the network runs (default auto)")
    p.add_argument("--labels", choices=LABEL_CHOICES, default="left-right",
                   help="left-right: 1 right lung, 2 left lung (default); binary: 1 lung")
    p.add_argument("--batch-size", type=int, default=None, help="sliding-window batch size (default: the config's)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1) (default: config)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 on CPU); off by default")
    p.add_argument("--no-postprocess", action="store_true", help="keep the raw network mask (no largest component,"
                   " no hole filling)")
    p.add_argument("--no-qc", action="store_true", help="no QC picture")
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    t0 = time.perf_counter()
    segmenter = LungSegmenter(args.model, args.config, args.device, args.labels, args.batch_size, args.overlap,
                              postprocess=not args.no_postprocess, amp=args.amp)
    results = segment_inputs(args.inputs, args.out, segmenter, overwrite=args.overwrite, qc=not args.no_qc,
                             progress=not args.no_progress and sys.stderr.isatty())
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    print(f"segment: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out} (stats: {Path(args.out) / STATS_CSV})")
    return 1 if counts["failed"] else 0
