"""The reference's ``normalize_dataset``: resample, map labels, crop/pad and write every LUNA16 case once.

``python -m pipeline preprocess ROOT VOX_SPACING Z_MAX Y_MAX X_MAX`` reads ``ROOT/lung_ct_image`` +
``ROOT/seg-lungs-LUNA16`` (or the official ``subset*`` layout) and writes ``ROOT/normalized_lung_ct/<uid>.mhd``
(int16 HU, not clipped, like the reference) and ``ROOT/normalized_lung_mask/<uid>.mhd`` (uint8 labels,
compressed). The transforms are the bundle's own: the ``preprocessing_transforms`` of ``train.json`` (or of the
configs given with ``--config``), so training on the written files sees exactly what training on the raw files
would; ``VOX_SPACING`` and the sizes, when given, override the config's ``vox_spacing`` and ``spatial_size``
(the reference's ``Z_MAX Y_MAX X_MAX`` is ``spatial_size = [X_MAX, Y_MAX, Z_MAX]`` in the bundle). How this
differs from the reference's script (interpolation, orientation, the written origin, the crop window) is in
docs/reference.md; ``--reference`` (bundle key ``reference_grid``) reproduces the reference's grid voxel for voxel
instead (:class:`transforms.ReferenceResampled`).

Cases run in parallel, already finished cases are skipped, each file is written atomically, and a failing case is
reported with its uid and reason without stopping the others.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from pipeline.cases import CaseResult, count_statuses
from pipeline.config import config_file, load_config, parsed
from pipeline.data import luna16
from pipeline.data.checks import check_pair, header
from pipeline.errors import cause_message
from transforms import ReferenceResampled, read_image, write_image
from transforms.errors import InputError

__all__ = ["PreprocessChain", "config_chain", "default_workers", "preprocess_case", "preprocess_dataset"]

logger = logging.getLogger(__name__)

#: an image whose values are all >= this is almost certainly not in Hounsfield units
NON_HU_MIN = 0


def default_workers() -> int:
    """``--workers`` default: one process per core, at most the reference's 8."""
    return min(8, os.cpu_count() or 1)


class PreprocessChain(NamedTuple):
    """What preprocessing takes from a bundle config."""

    transforms: Compose  #: the config's ``preprocessing_transforms`` after loading (read_image does that)
    image_key: str
    label_key: str
    spacing: float  #: the finest ``vox_spacing``, mm
    spatial_size: tuple[int, ...]  #: (X, Y, Z) after crop/pad


def config_chain(configs: Sequence[str | os.PathLike], overrides: Mapping[str, Any] | None = None) -> PreprocessChain:
    """The preprocessing of a bundle config (overlays after it, then ``overrides``), built once per process.

    Raises:
        InputError: the config cannot be read or lacks what preprocessing needs.
    """
    configs = tuple(map(str, configs))
    overrides = dict(overrides or {})
    key = (configs, repr(sorted(overrides.items())))
    if key not in _CHAINS:
        _CHAINS[key] = _build_chain(configs, overrides)
    return _CHAINS[key]


_CHAINS: dict[tuple, PreprocessChain] = {}  # built chains of this process (the command's workers build theirs once)


def _build_chain(configs: tuple[str, ...], overrides: dict[str, Any]) -> PreprocessChain:
    parser = load_config(list(configs), overrides, expected="train.json")
    name = "config " + ", ".join(f"'{c}'" for c in configs)
    for key in ("preprocessing_transforms", "image_key", "label_key", "vox_spacing", "spatial_size"):
        if key not in parser:
            raise InputError(f"{name} has no '{key}': pass the bundle's train.json (and its overlays)")
    chain = list(parsed(parser, "preprocessing_transforms", name))
    # read_image (one-line errors naming the file) does what LoadImaged + EnsureChannelFirstd do
    while chain and isinstance(chain[0], (LoadImaged, EnsureChannelFirstd)):
        chain.pop(0)
    if parser.get("reference_grid") is True and not any(isinstance(t, ReferenceResampled) for t in chain):
        raise InputError(f"{name} sets reference_grid but its preprocessing_transforms have no "
                         "transforms.ReferenceResampled: start from the bundle's train.json")
    spacing, size = parsed(parser, "vox_spacing", name), parsed(parser, "spatial_size", name)
    try:
        spacing = float(spacing) if np.ndim(spacing) == 0 else float(min(spacing))
        size = tuple(int(s) for s in size)
    except (TypeError, ValueError):
        raise InputError(f"{name}: vox_spacing {spacing!r} / spatial_size {size!r}: expected mm and (X, Y, Z) "
                         "voxel counts") from None
    return PreprocessChain(Compose(chain), parsed(parser, "image_key", name), parsed(parser, "label_key", name),
                           spacing, size)


def preprocess_case(
    uid: str,
    image_path: str,
    label_path: str,
    out_root: str,
    configs: Sequence[str],
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> CaseResult:
    """Preprocess one case with the config's transforms and write its two files; never raises for bad input."""
    out_img = Path(out_root) / luna16.NORMALIZED_IMAGE_DIR / f"{uid}.mhd"
    out_lab = Path(out_root) / luna16.NORMALIZED_MASK_DIR / f"{uid}.mhd"
    if not overwrite and out_img.is_file() and out_lab.is_file():
        return CaseResult(uid, "skipped")
    notes: list[str] = []
    try:
        xf, image_key, label_key, spacing, spatial_size = config_chain(configs, overrides)
        check_pair(image_path, label_path)
        source = header(image_path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data = xf({image_key: read_image(image_path), label_key: read_image(label_path)})
        image, label = data[image_key], data[label_key]
        if float(image.min()) >= NON_HU_MIN:
            notes.append(f"'{image_path}': no negative voxel (min {float(image.min()):.0f}): this does not look like a"
                         " CT in Hounsfield units (air is -1000 HU); convert with the scanner's rescale slope/intercept"
                         " first")
        resampled = [round(n * s / spacing) for n, s in zip(source.GetSize(), source.GetSpacing())]
        if any(r < t for r, t in zip(resampled, spatial_size)):
            notes.append(f"'{image_path}': resampled size {tuple(resampled)} is smaller than the crop "
                         f"{tuple(spatial_size)} (x, y, z): padded with the volume minimum")
        if not bool((label > 0).any()):
            notes.append(f"'{label_path}': the mask has no lung voxel")
        write_image(image, out_img)
        write_image(label, out_lab)
    except InputError as e:
        return CaseResult(uid, "failed", str(e), warnings=tuple(notes))
    except Exception as e:  # noqa: BLE001 - one broken case must not stop the others; report it
        # MONAI's Compose wraps our InputErrors in RuntimeError("applying transform ..."): report the cause
        return CaseResult(uid, "failed", cause_message(e), warnings=tuple(notes))
    return CaseResult(uid, "done", warnings=tuple(notes))


def preprocess_dataset(
    root: str | os.PathLike,
    spacing: float | None = None,
    spatial_size: Sequence[int] | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    config: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[CaseResult]:
    """Preprocess every case under ``root`` (the reference's ``normalize_dataset``).

    Args:
        root: LUNA16 root (reference or official layout).
        spacing: target isotropic voxel size in mm (the reference's ``vox_spacing``); ``None``: the config's.
        spatial_size: (X, Y, Z) output size in voxels (the reference's ``Z_MAX Y_MAX X_MAX`` reversed); ``None``:
            the config's ``spatial_size``.
        workers: processes (default: ``min(8, cpu count)``, the reference's 8 at most).
        overwrite: redo cases whose outputs exist.
        progress: show a progress bar.
        config: bundle config(s) with ``preprocessing_transforms`` (default: the bundle's ``train.json``).
        overrides: further config overrides (``{"label_mode": "left_right"}``).

    Returns:
        One :class:`pipeline.cases.CaseResult` per case (and per unpaired image).

    Raises:
        InputError: the root, its layout or the config is unusable, or an argument is out of range.
    """
    if spacing is not None and (spacing <= 0 or not np.isfinite(spacing)):
        raise InputError(f"VOX_SPACING must be a positive number of mm, got {spacing}")
    if spatial_size is not None and (len(spatial_size) != 3 or any(int(s) < 1 for s in spatial_size)):
        raise InputError(f"Z_MAX Y_MAX X_MAX must be positive voxel counts, got {tuple(spatial_size)[::-1]}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"--workers must be a whole number >= 1, got {workers!r}")
    configs = [str(c) for c in ([config_file("train.json")] if config is None else
                                [config] if isinstance(config, (str, os.PathLike)) else config)]
    overrides = dict(overrides or {})
    if spacing is not None:
        overrides["vox_spacing"] = float(spacing)
    if spatial_size is not None:
        overrides["spatial_size"] = [int(s) for s in spatial_size]
    config_chain(configs, overrides)  # a bad config fails here, once, not per case
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cases = luna16.find_cases(root, allow_unpaired=True)
    results: list[CaseResult] = []
    for w in caught:
        text = str(w.message)
        if "unpaired" in text and " 0 of " not in text.split(";")[0]:
            results.append(CaseResult("(unpaired)", "failed", text))  # CTs without a mask cannot be preprocessed
        elif "unpaired" in text:
            logger.warning(text)
    workers = workers or default_workers()
    t0 = time.perf_counter()
    args = [(c.uid, str(c.image), str(c.label), str(root), configs, overrides, overwrite) for c in cases]
    bar = _progress(len(args), progress)
    if workers <= 1 or len(args) <= 1:
        for a in args:
            results.append(preprocess_case(*a))
            bar.update(1)
    else:
        # spawn, not fork: forking a process whose OpenMP/BLAS threads are running can deadlock the children
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(preprocess_case, *a) for a in args]
            for fut in as_completed(futures):
                results.append(fut.result())
                bar.update(1)
    bar.close()
    for r in results:
        for note in r.warnings:
            logger.warning(note)
        if r.status == "failed":
            logger.error(f"case {r.case} failed: {r.message}")
    counts = count_statuses(results)
    logger.info(f"preprocess: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed in "
                f"{time.perf_counter() - t0:.1f} s ({workers} workers) -> {Path(root) / luna16.NORMALIZED_IMAGE_DIR}")
    return results


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc="preprocess", unit="case")
