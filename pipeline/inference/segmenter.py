"""Segment the lungs in chest CTs: any CT in, a lung mask in the CT's own geometry out, plus volumes and a QC picture.

Command line: ``python -m pipeline segment ct.mhd dicom_series/ scans/ --out masks/ [--labels binary]``. Python::

    segmenter = LungSegmenter("bundle/models/model.pt")   # loaded once; nothing is ever downloaded
    result = segmenter.segment("ct.nii.gz")               # result.mask (sitk.Image), result.stats; writes nothing
    segmenter.segment_file("ct.nii.gz", "masks/")          # mask, <name>_qc.png and a lung_stats.csv row

Everything the network needs comes from a bundle config (default ``bundle/configs/inference.json``, overlays such
as ``quick.json`` after it): ``network_def``, the ``preprocessing`` chain and the ``inferer``, the same objects
``python -m monai.bundle run --config_file configs/inference.json`` uses. Per CT:

1. **Read and check** before any compute (:func:`pipeline.data.checks.read_ct`): 3-D scalar image, spacing present
   and in (0, 20] mm, orthogonal direction matrix, an intensity distribution of a CT in Hounsfield units (air is
   -1000 HU; ``force`` skips this), at least two slices. This replaces the chain's loading transforms
   (``LoadImaged``, ``EnsureChannelFirstd``, ``EnsureFinited``). A scan under :data:`MIN_EXTENT_MM` head to foot
   (a few slices) is segmented as a slab (:func:`as_slab`): its slices repeated to :data:`SLAB_MM`, so the 3-D
   network reads lungs that continue above and below; the mask keeps only the scan's own slices.
2. **Resample** with the chain's ``Orientationd`` / ``Spacingd``. Run lazily, they give the grid (shape and affine,
   exactly MONAI's); when ``Spacingd`` is trilinear with border padding, SimpleITK resamples the file's voxels onto
   that grid (the same values to float rounding, without the eager chain's full-resolution transposed and float
   copies: ~2.5 s and ~1 GB less for a 512x512x300 CT); any other mode runs MONAI's transforms as they are.
3. **Intensity**: the chain's transforms after ``Spacingd`` (HU window and normalisation).
4. **Network**: the config's ``inferer`` (sliding window) over the body's bounding box
   (:func:`pipeline.inference.guards.body_mask` of the resampled CT, plus :data:`BODY_MARGIN_MM`; the rest is
   background); lung = argmax > 0; lung outside the body is removed and flagged.
5. **Left / right** on the network grid (:func:`pipeline.inference.sides.assign_sides`), by world position.
6. **Postprocessing** (``--no-postprocess`` turns it off): per lung, the largest component, holes filled.
7. **Back to the input's geometry**: SimpleITK nearest-neighbour resampling of the uint8 labels with the input
   as reference, so origin, spacing, direction and size are exactly the input's.
8. **Flags** (:func:`pipeline.inference.guards.case_flags`): lung outside the body, no lung, a volume implausible
   for the scanned extent, unbalanced sides, a thin scan; each is a word in ``lung_stats.csv``'s ``flags`` column
   and one warning line.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImaged, Orientationd, Spacingd
from scipy import ndimage

from networks.fuse import fold_batch_norms
from pipeline.cases import CaseResult
from pipeline.config import config_file, load_config, load_config_dicts, parsed, root_of_config
from pipeline.data.checks import check_image, read_ct
from pipeline.data.inputs import find_ct_inputs
from pipeline.device import DeviceError, autocast, setup_device
from pipeline.files import load_checkpoint, state_dict_from_checkpoint
from pipeline.inference.guards import Flag, body_mask, case_flags
from pipeline.inference.outputs import LABEL_CHOICES, STATS_CSV, output_paths
from pipeline.inference.report import LungStats, lung_stats, stats_row, update_stats_csv, write_qc_png
from pipeline.inference.run_report import write_run_report
from pipeline.inference.sides import assign_sides, postprocess_sides
from transforms import EnsureFinited, metatensor_to_sitk, sitk_to_metatensor
from transforms.errors import InputError
from transforms.functional import LUNG
from transforms.geometry import lps_geometry, sitk_affine, voxel_volume_ml, world_x
from transforms.io import write_sitk

__all__ = [
    "LABEL_CHOICES",
    "MIN_EXTENT_MM",
    "SLAB_MM",
    "LungSegmenter",
    "Segmentation",
    "as_slab",
    "default_config",
    "load_model",
    "segment_inputs",
    "stored_configs",
]

logger = logging.getLogger(__name__)

_TORCHSCRIPT_MARK = "/code/__torch__/"  # member path present in every torch.jit.save archive
#: transforms at the head of the config's chain that :func:`read_ct` replaces (it reads and checks more)
_LOADING = (LoadImaged, EnsureChannelFirstd, EnsureFinited)
_SPATIAL = (Orientationd, Spacingd)
#: a scan covering less than this head to foot is segmented as a slab: its slices repeated to :data:`SLAB_MM`
MIN_EXTENT_MM = 30.0
#: the network reads the body's bounding box plus this margin (mm); beyond it everything is air, never lung
BODY_MARGIN_MM = 20.0
#: the slab's extent (mm): more than the quick model's window (32 voxels of 5 mm), so no window sees the slab's ends
SLAB_MM = 200.0


def head_foot_axis(direction: np.ndarray) -> int:
    """The image axis closest to the body's head-foot direction (world z, in LPS and in RAS alike)."""
    return int(np.argmax(np.abs(np.asarray(direction, dtype=np.float64).reshape(3, 3)[2])))


def head_foot_extent_mm(image: sitk.Image) -> float:
    """The scan's extent along :func:`head_foot_axis`, mm."""
    axis = head_foot_axis(np.asarray(image.GetDirection()))
    return float(image.GetSize()[axis] * image.GetSpacing()[axis])


def as_slab(image: sitk.Image, extent_mm: float = SLAB_MM) -> sitk.Image:
    """``image`` extended head to foot to ``extent_mm`` by repeating its first and last slices (its own slices keep
    their positions and values): a few slices become a volume a 3-D network can read."""
    axis = head_foot_axis(np.asarray(image.GetDirection()))
    size, spacing = list(image.GetSize()), image.GetSpacing()
    pad = max(0, int(np.ceil(extent_mm / spacing[axis])) - size[axis])
    before = pad // 2
    size[axis] += pad
    column = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[:, axis]
    origin = np.asarray(image.GetOrigin()) - before * spacing[axis] * column
    resample = sitk.ResampleImageFilter()
    resample.SetReferenceImage(image)
    resample.SetSize(size)
    resample.SetOutputOrigin(origin.tolist())
    resample.SetInterpolator(sitk.sitkNearestNeighbor)
    resample.SetUseNearestNeighborExtrapolator(True)
    return resample.Execute(image)


def default_config() -> Path:
    """The bundle's ``inference.json`` (see :func:`pipeline.config.bundle_dir`)."""
    return config_file("inference.json")


def _is_torchscript(path: Path) -> bool:
    return zipfile.is_zipfile(path) and any(_TORCHSCRIPT_MARK in n for n in zipfile.ZipFile(path).namelist())


def stored_configs(path: str | os.PathLike) -> list[dict] | None:
    """The bundle configs that ``ckpt_export`` stored inside a TorchScript file, base config first; else ``None``.

    MONAI's ``ckpt_export`` saves each ``--config_file`` as an extra file of the archive named after it without
    extension (``extra/inference``, ``extra/quick``) beside ``extra/metadata.json``; the archive does not keep
    their order, so the config that defines ``preprocessing`` comes first and the overlays follow by name.
    """
    path = Path(path)
    if not path.is_file() or not _is_torchscript(path):
        return None
    configs: list[tuple[str, dict]] = []
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            parts = member.split("/")
            if len(parts) >= 3 and parts[-2] == "extra" and parts[-1] != "metadata.json":
                try:
                    content = json.loads(archive.read(member))
                except ValueError:
                    continue
                if isinstance(content, dict):
                    configs.append((parts[-1], content))
    if not any("preprocessing" in c for _, c in configs):
        return None
    configs.sort(key=lambda item: ("preprocessing" not in item[1], item[0]))
    return [c for _, c in configs]


def load_model(model: str | os.PathLike, parser: Any, device: torch.device | str = "cpu",
               config_name: str = "the config") -> torch.nn.Module:
    """The network in eval mode: a TorchScript file (``ckpt_export``'s model.ts) or a state dict + ``network_def``.

    A state dict is loaded with ``torch.load(weights_only=True)`` into the config's ``network_def``, built on the
    ``meta`` device (no time spent on a random initialisation that the weights replace).

    Args:
        model: the weights file.
        parser: the bundle config (:func:`pipeline.config.load_config`) holding ``network_def``.
        device: where the network runs.
        config_name: how error messages name the config.

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
    state = state_dict_from_checkpoint(load_checkpoint(path), path)
    if "network_def" not in parser:
        raise InputError(f"{config_name} has no 'network_def' to build the network for the weights '{path}'")
    with torch.device("meta"):
        net = parsed(parser, "network_def", config_name, instantiate=True)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        reason = " ".join(str(e).split())[:300]
        raise InputError(f"model '{path}' does not fit network_def of {config_name}: {reason}") from e
    if any(t.is_meta for t in (*net.parameters(), *net.buffers())):
        raise InputError(f"model '{path}' leaves tensors of network_def in {config_name} unset")
    return fold_batch_norms(net.to(device), inplace=True)  # inference only: the same function, ~4 % faster


def _grid_image(array_xyz: np.ndarray, affine: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.T))
    origin, spacing, direction = lps_geometry(affine)
    image.SetOrigin(origin.tolist())
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.ravel().tolist())
    return image


def _split_chain(chain: Sequence, config_name: str) -> tuple[list, list]:
    """(spatial, intensity) transforms of the config's preprocessing: load -> orient/resample -> intensity.

    Raises:
        InputError: the chain has another shape (the segment tool could not apply it faithfully).
    """
    chain = list(chain)
    positions = [i for i, t in enumerate(chain) if isinstance(t, _SPATIAL)]
    if not positions or not any(isinstance(t, Spacingd) for t in chain):
        raise InputError(f"the preprocessing of {config_name} has no Spacingd: pipeline segment needs the network's "
                         "grid (load -> Orientationd -> Spacingd -> intensity transforms)")
    head, spatial = chain[: positions[0]], chain[positions[0]: positions[-1] + 1]
    odd = [type(t).__name__ for t in head if not isinstance(t, _LOADING)]
    odd += [type(t).__name__ for t in spatial if not isinstance(t, _SPATIAL)]
    if odd:
        raise InputError(f"the preprocessing of {config_name} has {', '.join(odd)} before or between its spatial "
                         "transforms; pipeline segment supports load -> Orientationd -> Spacingd -> intensity "
                         "transforms")
    return spatial, chain[positions[-1] + 1:]


def _fast_resampling(spatial: Sequence) -> bool:
    """Whether SimpleITK can resample for these transforms: trilinear with border padding (MONAI's names)."""
    resamplers = [t for t in spatial if isinstance(t, Spacingd)]
    return all(str(m).lower() == "bilinear" for t in resamplers for m in t.mode) and all(
        str(p).lower() == "border" for t in resamplers for p in t.padding_mode)


@dataclass
class Segmentation:
    """One segmented CT.

    Attributes:
        mask: uint8 labels in the input's geometry (1 right, 2 left; or 1 lung for ``labels="binary"``).
        image: the CT as read (SimpleITK, HU).
        stats: volumes and mean HU per lung.
        timings: seconds per stage: ``load``, ``preprocess``, ``network``, ``invert_postprocess``.
        notes: warnings for the user (e.g. how touching lungs were split, no lung found).
        flags: what to look at (:func:`pipeline.inference.guards.case_flags`).
    """

    mask: sitk.Image
    image: sitk.Image
    stats: LungStats
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)


class LungSegmenter:
    """Lung segmentation for researchers: the model is loaded once, then any number of CTs are segmented.

    Args:
        model: a state dict ``.pt`` (built with the config's ``network_def``), a TorchScript ``.ts``, or an
            ``nn.Module`` returning (N, C, X, Y, Z) logits. Default: ``model.pt`` in the config's ``ckpt_dir``
            (``bundle/models/model.pt`` for the bundle's own configs).
        config: bundle config(s), later ones overriding earlier ones; they give ``network_def``, ``preprocessing``
            and ``inferer``. Default: for a TorchScript ``model`` the configs stored inside it by ``ckpt_export``
            (:func:`stored_configs`: the model runs at its own settings), else :func:`default_config`.
        device: ``auto``, ``cpu``, ``cuda`` or ``npu`` (see :func:`pipeline.device.setup_device`); default: the
            config's ``device_name``.
        labels: ``"left-right"`` (1 right lung, 2 left lung) or ``"binary"`` (1 lung).
        batch_size: sliding-window batch size (default: the config's ``sw_batch_size``).
        overlap: sliding-window overlap in [0, 1) (default: the config's ``sw_overlap``).
        postprocess: keep the largest component per lung and fill holes.
        amp: autocast (bfloat16 on CPU, float16 on accelerators) for the network; default: the config's ``amp``.
        overrides: further config overrides, as ``--key value`` would give them (``{"vox_spacing": 2.0}``).
        force: segment images whose intensities do not look like a CT in HU (MR, unscaled); they are refused
            otherwise.
        body_guard: remove lung outside the body (:func:`pipeline.inference.guards.body_mask`); off only for a
            field of view with almost no body tissue in it (a crop inside the lungs), where the mask can fail.

    Raises:
        InputError: bad argument, missing or unreadable model/config, unusable device.
    """

    def __init__(self, model: str | os.PathLike | torch.nn.Module | None = None,
                 config: str | os.PathLike | Sequence[str | os.PathLike] | None = None, device: str | None = None,
                 labels: str = "left-right", batch_size: int | None = None, overlap: float | None = None,
                 postprocess: bool = True, amp: bool | None = None,
                 overrides: Mapping[str, Any] | None = None, force: bool = False, body_guard: bool = True) -> None:
        if labels not in LABEL_CHOICES:
            raise InputError(f"labels {labels!r}: expected one of {', '.join(LABEL_CHOICES)}")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1):
            raise InputError(f"batch size {batch_size!r}: expected a positive integer")
        if overlap is not None and not 0.0 <= overlap < 1.0:
            raise InputError(f"overlap {overlap!r}: expected a fraction in [0, 1)")
        stored = stored_configs(model) if config is None and isinstance(model, (str, os.PathLike)) else None
        config = default_config() if config is None else config
        files = [config] if isinstance(config, (str, os.PathLike)) else list(config)
        name = "config " + ", ".join(f"'{f}'" for f in files)
        overrides = dict(overrides or {})
        if batch_size is not None:
            overrides["sw_batch_size"] = int(batch_size)
        if overlap is not None:
            overrides["sw_overlap"] = float(overlap)
        if stored:
            files, name = [f"{model} (stored configs)"], f"the configs stored in '{model}'"
            self.parser = parser = load_config_dicts(stored, overrides)
        else:
            self.parser = parser = load_config(files, overrides)
        for key in ("image_key", "preprocessing", "inferer", "output_postfix"):
            if key not in parser:
                raise InputError(f"{name} has no '{key}': pass the bundle's inference.json (and its overlays)")
        try:
            self.device = setup_device(parsed(parser, "device_name", name) if device is None else device)
        except DeviceError as e:
            raise InputError(str(e)) from e
        self.labels, self.postprocess, self.force, self.body_guard = labels, postprocess, force, body_guard
        self.config_names = [str(f) for f in files]
        self.amp = bool(parsed(parser, "amp", name)) if amp is None else amp
        self.image_key = parsed(parser, "image_key", name)
        self.postfix = parsed(parser, "output_postfix", name)
        self.inferer = parsed(parser, "inferer", name)
        overlap, windows = getattr(self.inferer, "overlap", 0.0), getattr(self.inferer, "sw_batch_size", 1)
        if not (np.all(np.asarray(overlap) >= 0) and np.all(np.asarray(overlap) < 1)) or int(windows) < 1:
            raise InputError(f"{name}: sliding window overlap {overlap!r} and batch {windows!r}: expected an overlap"
                             " in [0, 1) and a batch of at least 1 (sw_overlap, sw_batch_size)")
        self._spatial, self._intensity = _split_chain(parsed(parser, "preprocessing", name).transforms, name)
        self._fast = _fast_resampling(self._spatial)
        if self._fast:
            for t in self._spatial:
                t.lazy = True  # shape and affine only: SimpleITK resamples the voxels (module docstring, step 2)
        self.model_name = f"{type(model).__name__} (in memory)" if isinstance(model, torch.nn.Module) else None
        if isinstance(model, torch.nn.Module):
            self.network = fold_batch_norms(model).to(self.device)  # a folded copy: the caller's model is untouched
        else:
            if model is None:
                ckpt_dir = parsed(parser, "ckpt_dir", name) if "ckpt_dir" in parser else None
                model = Path(ckpt_dir or root_of_config(files[0]) / "models") / "model.pt"
            self.model_name = str(model)
            self.network = load_model(model, parser, self.device, name)

    def settings(self) -> dict[str, str]:
        """What a report shows of this segmenter: the model and the settings it runs at."""
        grid = [t for t in self._spatial if isinstance(t, Spacingd)]
        spacing = getattr(grid[0].spacing_transform, "pixdim", None) if grid else None
        return {"model": str(self.model_name), "config": ", ".join(self.config_names), "labels": self.labels,
                "device": str(self.device), "network grid spacing (mm)": str(np.round(np.asarray(spacing), 3).tolist())
                if spacing is not None else "n/a",
                "sliding window": f"roi {list(getattr(self.inferer, 'roi_size', []))}, overlap "
                                  f"{getattr(self.inferer, 'overlap', 0)}",
                "postprocess": str(self.postprocess), "body mask guard": str(self.body_guard), "amp": str(self.amp),
                "force": str(self.force)}

    def preprocess(self, image: sitk.Image) -> MetaTensor:
        """(1, X, Y, Z) float32 normalised CT on the network grid, RAS affine (see module docstring, steps 2-3)."""
        return self.normalise(self.resample(image))

    def normalise(self, grid: MetaTensor) -> MetaTensor:
        """The chain's intensity transforms (module docstring, step 3) on a CT in HU on the network grid."""
        data = {self.image_key: grid}
        for t in self._intensity:
            data = t(data)
        return data[self.image_key]

    def resample(self, image: sitk.Image) -> MetaTensor:
        """(1, X, Y, Z) float32 CT in HU on the network grid, RAS affine (module docstring, step 2)."""
        key = self.image_key
        if self._fast:
            size = tuple(image.GetSize())
            affine = torch.as_tensor(sitk_affine(image))
            placeholder = MetaTensor(torch.zeros(1, 1, 1, 1).expand(1, *size), affine=affine)
            data = {key: placeholder}
            for t in self._spatial:
                data = t(data)
            shape = [int(n) for n in data[key].peek_pending_shape()]
            affine = np.asarray(data[key].peek_pending_affine(), dtype=np.float64)
            origin, spacing, direction = lps_geometry(affine)
            resample = sitk.ResampleImageFilter()
            resample.SetSize(shape)
            resample.SetOutputOrigin(origin.tolist())
            resample.SetOutputSpacing(spacing.tolist())
            resample.SetOutputDirection(direction.ravel().tolist())
            resample.SetInterpolator(sitk.sitkLinear)
            resample.SetOutputPixelType(sitk.sitkFloat32)
            resample.SetUseNearestNeighborExtrapolator(True)  # MONAI's padding_mode="border"
            resampled = resample.Execute(image)  # keep a reference: the array view below borrows its buffer
            array = np.ascontiguousarray(sitk.GetArrayViewFromImage(resampled).T)
            data = {key: MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(affine))}
        else:
            data = {key: sitk_to_metatensor(image)}
            for t in self._spatial:
                data = t(data)
        return data[key]

    def predict(self, image: MetaTensor) -> np.ndarray:
        """(X, Y, Z) boolean lung mask on the network grid from a preprocessed (1, X, Y, Z) image."""
        with torch.inference_mode(), autocast(self.device, enabled=self.amp):
            logits = self.inferer(image.as_tensor()[None].to(self.device), self.network)
        lung = logits[0, 0] > 0 if logits.shape[1] == 1 else logits[0].argmax(0) > 0
        return lung.cpu().numpy()

    def predict_in(self, image: MetaTensor, body: np.ndarray | None) -> np.ndarray:
        """:meth:`predict` on the box around ``body`` (plus :data:`BODY_MARGIN_MM`), background elsewhere: the windows
        see the patient, not metres of air beyond the body that no training crop held. ``None``: the whole grid."""
        if body is None or not body.any():
            return self.predict(image)
        spacing = np.abs(np.asarray(image.pixdim, dtype=np.float64))
        box = []
        for axis, step in enumerate(spacing):
            hits = np.flatnonzero(body.any(axis=tuple(a for a in range(body.ndim) if a != axis)))
            margin = int(np.ceil(BODY_MARGIN_MM / step))
            box.append(slice(max(0, hits[0] - margin), min(body.shape[axis], hits[-1] + 1 + margin)))
        if all(b.start == 0 and b.stop == n for b, n in zip(box, body.shape)):
            return self.predict(image)
        lung = np.zeros(body.shape, dtype=bool)
        lung[tuple(box)] = self.predict(image[(slice(None), *box)])
        return lung

    def segment(self, source: str | os.PathLike | sitk.Image | MetaTensor) -> Segmentation:
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
                image = read_ct(source, hounsfield=not self.force)
            extent = head_foot_extent_mm(image)
            work = image
            if extent < MIN_EXTENT_MM:
                work = as_slab(image)
                notes.append(f"a thin scan ({extent:g} mm head to foot): segmented as a {SLAB_MM:g} mm slab of its "
                             "slices repeated; segment the whole series for a full 3-D result")
            timings["load"], t0 = time.perf_counter() - t0, time.perf_counter()
            hu = self.resample(work)
            _, grid_spacing, grid_direction = lps_geometry(np.asarray(hu.affine, dtype=np.float64))
            body = (body_mask(hu[0].numpy(), axial_axis=head_foot_axis(grid_direction))
                    if self.body_guard else np.ones(hu.shape[1:], dtype=bool))
            grid = self.normalise(hu)
            timings["preprocess"], t0 = time.perf_counter() - t0, time.perf_counter()
            lung = self.predict_in(grid, body if self.body_guard else None)
            outside = lung & ~body
            outside_ml = float(outside.sum()) * voxel_volume_ml(grid_spacing)
            lung &= body
            timings["network"], t0 = time.perf_counter() - t0, time.perf_counter()
        notes += [str(w.message).splitlines()[0] for w in caught if issubclass(w.category, UserWarning)
                  and "DICOM series" in str(w.message)]
        affine = np.asarray(grid.affine, dtype=np.float64)
        midline = world_x(affine, np.asarray(ndimage.center_of_mass(body))) if self.body_guard and body.any() else None
        labels, how = assign_sides(lung, affine, midline)
        if how not in ("empty", "components"):  # no lung at all is a flag (step 8)
            notes.append(f"the lungs touch: left and right were separated by the {how}")
        if self.postprocess:
            postprocess_sides(labels)
        mask = sitk.Resample(_grid_image(labels, affine), image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                             sitk.sitkUInt8)
        stats = lung_stats(image, mask)
        flags = case_flags(stats.right_ml, stats.left_ml, extent, outside_ml)
        if self.labels == "binary":
            mask = sitk.Cast(mask > 0, sitk.sitkUInt8) * LUNG
        timings["invert_postprocess"] = time.perf_counter() - t0
        return Segmentation(mask, image, stats, timings, notes, flags)

    def segment_file(self, source: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False,
                     qc: bool = True) -> CaseResult:
        """Segment one input and write ``<name>_lung.<ext>``, ``<name>_qc.png`` and its ``lung_stats.csv`` row.

        Inputs whose mask (and QC picture, with ``qc``) exist are skipped unless ``overwrite``. Never raises for
        a bad input: the result says ``failed`` and why.
        """
        out, png = output_paths(source, out_dir, self.postfix)
        if not overwrite and Path(out).is_file() and (not qc or png.is_file()):
            return CaseResult(str(source), "skipped", output=out)
        t0 = time.perf_counter()
        try:
            seg = self.segment(source)
            t1 = time.perf_counter()
            write_sitk(seg.mask, out)  # the SimpleITK mask as it is, atomically (no MetaTensor round trip)
            if qc:
                s = seg.stats
                remarks = seg.notes + [f.name for f in seg.flags]
                title = (f"{Path(source).name}: right {s.right_ml:.0f} mL, left {s.left_ml:.0f} mL, "
                         f"total {s.total_ml:.0f} mL" + (f" ({'; '.join(remarks)})" if remarks else ""))
                write_qc_png(png, seg.image, seg.mask, title, binary=self.labels == "binary")
            seg.timings["write"] = time.perf_counter() - t1
            runtime = time.perf_counter() - t0
            update_stats_csv(Path(out_dir) / STATS_CSV, stats_row(str(source), out, seg.stats, runtime, self.labels,
                                                                  [f.name for f in seg.flags]))
        except InputError as e:
            return CaseResult(str(source), "failed", str(e), out, time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - one broken case must not stop the batch; say what happened
            logger.debug("segmenting '%s' failed", source, exc_info=True)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return CaseResult(str(source), "failed", f"'{source}': {type(e).__name__}: {first}", out,
                              time.perf_counter() - t0)
        return CaseResult(str(source), "done", "; ".join(seg.notes), out, runtime, seg.timings,
                          tuple(f"{f.name}: {f.message}" for f in seg.flags))


def segment_inputs(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, segmenter: LungSegmenter,
                   overwrite: bool = False, qc: bool = True, progress: bool = True,
                   report: bool = True) -> list[CaseResult]:
    """Segment every CT found in ``inputs`` (files, DICOM folders, folders of either) one after another.

    A bad input (missing, unreadable, failing :func:`check_image`, colliding output name) is logged as one
    ``failed: ...`` line and the run goes on. With ``report``, ``out_dir/report.html``
    (:mod:`pipeline.inference.run_report`) is rewritten after each input. Returns one :class:`CaseResult` per
    input found (or not found).
    """
    started = time.perf_counter()

    def write_report(finished: bool) -> None:
        if report:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            write_run_report(out_dir, results, segmenter.settings(),
                             lambda source: output_paths(source, out_dir, segmenter.postfix)[1],
                             time.perf_counter() - started, finished)

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    results: list[CaseResult] = []
    sources: list[str] = []
    out_root = Path(out_dir).resolve()
    for item in inputs:
        try:
            found = find_ct_inputs(item)
        except InputError as e:
            results.append(CaseResult(str(item), "failed", str(e)))
            logger.error(f"failed: {e}")
            continue
        # our own outputs, when --out lies inside an input folder, are not inputs
        sources += [s for s in found if s not in sources and out_root not in Path(s).resolve().parents]
    claimed: dict[str, str] = {}
    with logging_redirect_tqdm(), tqdm(sources, desc="segment", unit="CT", disable=not progress) as bar:
        for source in bar:
            out = output_paths(source, out_dir, segmenter.postfix)[0]
            if out in claimed:
                result = CaseResult(source, "failed", f"'{source}': output '{out}' is already taken by "
                                    f"'{claimed[out]}' (same name): rename one of them or segment it separately", out)
            else:
                claimed[out] = source
                result = segmenter.segment_file(source, out_dir, overwrite=overwrite, qc=qc)
            results.append(result)
            if result.status == "failed":
                logger.error("failed: " + " ".join(result.message.split()))
            elif result.message:
                logger.warning(f"'{source}': {result.message}")
            for line in result.warnings:  # one line per flag
                logger.warning(f"'{source}': {line}")
            write_report(finished=False)
    write_report(finished=True)
    return results
