"""Benchmark (not a test): the training input pipeline against the training step it feeds.

Builds the training dataset exactly as ``bundle/configs/train.json`` does (``train#dataset``: a
:class:`pipeline.data.datasets.FlattenedDataset` over the deterministic preprocessing + octants, with the per-sample
intensity transforms), on synthetic LUNA16 cases written by :func:`pipeline.data.synthetic.generate_dataset`, and
measures, side by side in one run:

1. cache build: seconds per case (wall time of building ``train#dataset``, the config's ``cache_workers``
   threads for the memory cache, serial for the disk cache) and bytes per case (memory: tensor bytes held by
   the cache; disk: size of the ``PersistentDataset`` files);
2. loader: samples/s that the config's ``DataLoader(batch_size, shuffle=True, num_workers)`` delivers from
   that cache with 0, 1 and 2 workers; one epoch per setting per round, settings interleaved (their order
   rotates every round), median over rounds. "first batch s" is the wait for the first batch of an epoch
   (worker start included); "samples/s" is the steady rate after it, the number a long epoch sees (with a
   short synthetic epoch it slightly flatters workers, whose first batches are made in parallel); "CPU
   ms/sample" is the CPU time of the main process and its workers over the epoch per sample, the cost that
   tells how many cores a faster step would need (wall rates swing with the load of a shared machine);
3. step: samples/s that a training step consumes: forward + loss + backward + Adam step of the config's V-Net
   (``network_def``, reference width) on a real batch from the loader, steps of the batch sizes interleaved,
   median (:func:`benchmarks.network.make_step`, plain cross-entropy instead of the config's class-weighted one:
   the same cost to within noise);
4. the ratio loader/step per setting, and whether it reaches the goal (>= 4x: the accelerator never waits).
   The loader is timed alone: in CPU training it shares the cores with the step.

Cache variants: ``memory-int16`` (the config: int16 HU, uint8 mask, ``CacheDataset``), ``memory-float32``
(the same with float32 image and mask, the plain alternative), ``disk-int16`` (``cache="disk"``,
``PersistentDataset``), ``disk-float32``.

    python benchmarks/data.py                    # 4 full-size cases (512x512xN), 2.5 mm, 160x160x128, batch 2 and 4
    python benchmarks/data.py --tiny --json      # CI smoke run (seconds); last line is a JSON object
    python benchmarks/data.py --variants memory-int16 --workers 0 2 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere: the repo root holds `pipeline`, `networks`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling benchmarks: network.py, segment.py

from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.transforms import CastToTyped, Compose
from network import make_step
from segment import cpu_name

from pipeline.config import config_file, load_config
from pipeline.data.luna16 import find_cases
from pipeline.data.synthetic import generate_dataset

__all__ = ["CacheResult", "LoaderResult", "StepResult", "build_dataset", "main"]

VARIANTS = ("memory-int16", "memory-float32", "disk-int16", "disk-float32")
DEFAULT_VARIANTS = ("memory-int16", "memory-float32", "disk-int16")
GOAL_RATIO = 4.0  # loader at least 4x faster than the step (issue 7)
SEED = 0
MB = 1e6
# full setting: the reference's sizes (vox_spacing 2.5, Z_MAX Y_MAX X_MAX = 128 160 160, octants 80x80x64)
FULL = {"cases": 4, "batches": (2, 4), "epochs": 7, "steps": 2, "warmup": 1, "overrides": {}}
# tiny: small phantoms, 32^3 volumes (16^3 octants), a V-Net with init_filters 4
TINY_SHAPE = (64, 64, 40)  # phantom (X, Y, Z) voxels
TINY = {"cases": 2, "batches": (2,), "epochs": 2, "steps": 1, "warmup": 1,
        "overrides": {"vox_spacing": 1.6, "spatial_size": [32, 32, 32], "network_def#init_filters": 4}}


@dataclass
class CacheResult:
    """One cache variant: build time and size per case (volume), samples (kept octants)."""

    variant: str
    cases: int
    samples: int
    build_s_per_case: float
    mb_per_case: float
    dtypes: dict[str, str]  # cached dtype per key (image, label)
    transforms: list[str]


@dataclass
class LoaderResult:
    """One loader setting; rates in samples/s (medians over epochs)."""

    variant: str
    workers: int
    batch: int
    first_batch_s: float
    samples_per_s: float  # steady: after the first batch
    epoch_samples_per_s: float  # whole epoch, worker start and first batch included
    cpu_ms_per_sample: float  # CPU time of main process + workers over the whole epoch, per sample
    step_samples_per_s: float
    ratio: float  # samples_per_s / step_samples_per_s
    goal_met: bool


@dataclass
class StepResult:
    """Training step of the config's V-Net at one batch size (CPU)."""

    batch: int
    median_s: float
    cpu_median_s: float
    samples_per_s: float


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help=f"CI smoke run: {TINY['cases']} phantoms {TINY_SHAPE}, 32^3 volumes, V-Net init_filters 4")
    parser.add_argument("--cases", type=int, default=None, help=f"synthetic cases (default {FULL['cases']})")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(DEFAULT_VARIANTS))
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader num_workers (0 1 2)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="batch sizes (default 2 4)")
    parser.add_argument("--epochs", type=int, default=None, help=f"loader epochs per setting (default {FULL['epochs']})")
    parser.add_argument("--steps", type=int, default=None, help=f"timed training steps per batch size "
                                                                 f"(default {FULL['steps']}, after 1 warm-up)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the data and disk caches here "
                                                                    "(default: temporary; cases are reused if present)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    args = parser.parse_args(argv)
    preset = TINY if args.tiny else FULL
    args.cases = args.cases or preset["cases"]
    args.batches = args.batches or list(preset["batches"])
    args.epochs = args.epochs or preset["epochs"]
    args.steps = args.steps or preset["steps"]
    args.warmup = preset["warmup"]
    args.overrides = preset["overrides"]
    if args.cases < 1 or args.epochs < 1 or args.steps < 1 or min(args.batches) < 1 or min(args.workers) < 0:
        parser.error("--cases, --epochs, --steps and --batches must be at least 1, --workers at least 0")
    return args


def write_cases(root: Path, cases: int, tiny: bool) -> list[dict[str, str]]:
    """Synthetic LUNA16 under ``root`` (reused if already there); all cases go to training."""
    have = len(find_cases(root)) if (root / "lung_ct_image").is_dir() else 0
    if have < cases:
        start = time.perf_counter()
        generate_dataset(root, cases=cases, seed=SEED, shape=TINY_SHAPE if tiny else None, full_size=not tiny,
                         workers=min(cases, os.cpu_count() or 1))
        print(f"wrote {cases} synthetic cases in {time.perf_counter() - start:.1f} s", flush=True)
    return [{"image": c.image, "label": c.label, "uid": c.uid} for c in find_cases(root)[:cases]]


def _config(overrides: dict[str, Any]) -> ConfigParser:
    return load_config(config_file("train.json"), overrides)


def _names(transform: Any) -> list[str]:
    return [type(t).__name__ for t in getattr(transform, "transforms", [transform])]


def with_float32_cache(preprocessing: Compose) -> Compose:
    """The config's preprocessing with its compact cast (int16 image, uint8 mask) replaced by float32 for both."""
    casts = [t for t in preprocessing.transforms if isinstance(t, CastToTyped)]
    if len(casts) != 1:
        raise ValueError(f"expected one CastToTyped in train#preprocessing, found {len(casts)}: {_names(preprocessing)}")
    keys = list(casts[0].keys)
    return Compose([CastToTyped(keys=keys, dtype=np.float32) if isinstance(t, CastToTyped) else t
                    for t in preprocessing.transforms])


def build_dataset(variant: str, datalist: list[dict], work: Path, overrides: dict[str, Any]) -> tuple[Any, ConfigParser]:
    """``train#dataset`` of train.json for ``variant``, on ``datalist``; returns (dataset, its parser).

    Args:
        variant: ``"<memory|disk>-<int16|float32>"``.
        datalist: training items ``{"image", "label", "uid"}``.
        work: folder for this variant's disk cache (``output_dir``).
        overrides: further config overrides (sizes for the tiny run).
    """
    cache, dtype = variant.split("-")
    parser = _config({"datalist": {"training": datalist, "validation": []}, "output_dir": str(work), "cache": cache,
                      **overrides})
    if dtype == "float32":
        parser["train#dataset#transform"] = with_float32_cache(parser.get_parsed_content("train#preprocessing"))
    return parser.get_parsed_content("train#dataset"), parser


def cache_bytes(dataset: Any, cache_dir: Path) -> int:
    """Bytes the cache holds: tensor storage of a memory cache (each storage once), or the disk cache's files."""
    cached = getattr(dataset.volumes, "_cache", None)
    if cached is None:
        return sum(f.stat().st_size for f in cache_dir.rglob("*") if f.is_file())
    seen: dict[int, int] = {}
    for item in cached:
        for sample in item if isinstance(item, (list, tuple)) else [item]:
            for value in sample.values():
                if isinstance(value, torch.Tensor):
                    storage = value.untyped_storage()
                    seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def cached_dtypes(dataset: Any) -> dict[str, str]:
    """dtype of each tensor in the first cached sample (as the cache holds it, before the sample transforms)."""
    first = dataset.volumes[dataset.index[0][0]]
    sample = first[0] if isinstance(first, (list, tuple)) else first
    return {k: str(v.dtype).replace("torch.", "") for k, v in sample.items() if isinstance(v, torch.Tensor)}


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its finished (joined) children, e.g. loader workers."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def loader_epoch(dataset: Any, batch: int, workers: int) -> tuple[float, float, int, float]:
    """One epoch of the config's DataLoader.

    Returns:
        (first batch s, steady s after it, samples after it, CPU s of the whole epoch in this process and its
        workers, which are joined at the end of a non-persistent epoch).
    """
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers)
    cpu = _cpu_s()
    start = time.perf_counter()
    first = None
    samples = 0
    for data in loader:
        n = int(data["image"].shape[0])
        if first is None:
            first = time.perf_counter()
        else:
            samples += n
    end = time.perf_counter()
    return first - start, end - first, samples, _cpu_s() - cpu


def bench_loaders(datasets: dict[str, Any], workers: list[int], batches: list[int], epochs: int) -> dict:
    """Every (variant, workers, batch) setting for ``epochs`` rounds, interleaved; returns medians per setting."""
    settings = [(v, w, b) for v in datasets for w in workers for b in batches]
    runs: dict[tuple, list[tuple[float, float, int, float]]] = {s: [] for s in settings}
    for r in range(epochs):
        shift = r % len(settings)
        for v, w, b in settings[shift:] + settings[:shift]:
            runs[(v, w, b)].append(loader_epoch(datasets[v], b, w))
        print(f"  loader round {r + 1}/{epochs} done", flush=True)
    out = {}
    for s, rs in runs.items():
        first = statistics.median(x[0] for x in rs)
        steady = statistics.median(x[2] / x[1] if x[1] > 0 else float("inf") for x in rs)
        epoch = statistics.median((x[2] + s[2]) / (x[0] + x[1]) for x in rs)
        cpu_ms = statistics.median(1e3 * x[3] / (x[2] + s[2]) for x in rs)  # ~ samples = after first + first batch
        out[s] = (first, steady, epoch, cpu_ms)
    return out


def bench_steps(parser: ConfigParser, dataset: Any, batches: list[int], steps: int, warmup: int) -> list[StepResult]:
    """Training steps of the config's ``network_def`` on real loader batches, batch sizes interleaved."""
    device = torch.device("cpu")
    closures = {}
    for b in batches:
        torch.manual_seed(SEED)
        net = parser.get_parsed_content("network_def", instantiate=True, lazy=False)
        data = next(iter(DataLoader(dataset, batch_size=b, shuffle=False, num_workers=0)))
        x = data["image"].as_tensor().float()
        y = data["label"].as_tensor()[:, 0].long()
        if x.shape[0] != b:
            raise ValueError(f"the dataset has {len(dataset)} samples, fewer than batch {b}: use more --cases")
        closures[b] = make_step(net, x, y, train=True, dtype=None, device=device)
        start = time.perf_counter()
        for _ in range(warmup):
            closures[b]()
        print(f"  step batch {b}: warm-up {time.perf_counter() - start:.1f} s", flush=True)
    wall: dict[int, list[float]] = {b: [] for b in batches}
    cpu: dict[int, list[float]] = {b: [] for b in batches}
    for i in range(steps):
        for b in batches if i % 2 == 0 else batches[::-1]:
            start, start_cpu = time.perf_counter(), time.process_time()
            closures[b]()
            wall[b].append(time.perf_counter() - start)
            cpu[b].append(time.process_time() - start_cpu)
    return [StepResult(batch=b, median_s=statistics.median(wall[b]), cpu_median_s=statistics.median(cpu[b]),
                       samples_per_s=b / statistics.median(wall[b])) for b in batches]


def _report(args: argparse.Namespace, caches: list[CacheResult], loaders: list[LoaderResult],
            steps: list[StepResult], parser: ConfigParser) -> None:
    size = parser.get_parsed_content("spatial_size")
    print(f"\ndata benchmark: {caches[0].cases} synthetic cases "
          f"({'x'.join(map(str, TINY_SHAPE)) if args.tiny else '512x512xN, full size'}), vox_spacing "
          f"{parser.get_parsed_content('vox_spacing')} mm, spatial_size {'x'.join(map(str, size))}, octants "
          f"{'x'.join(map(str, parser.get_parsed_content('roi_size')))}; V-Net init_filters "
          f"{parser.get_parsed_content('network_def#init_filters')}; cache_workers "
          f"{parser.get_parsed_content('cache_workers')}; {args.epochs} loader epochs, {args.steps} timed steps")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, threads "
          f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f} at the end")
    print("\n| cache | cached dtypes | samples | build s/case | MB/case |\n|---|---|---|---|---|")
    for c in caches:
        dtypes = ", ".join(f"{k} {v}" for k, v in c.dtypes.items())
        print(f"| {c.variant} | {dtypes} | {c.samples} | {c.build_s_per_case:.2f} | {c.mb_per_case:.1f} |")
    print("\n| batch | step s | step samples/s |\n|---|---|---|")
    for s in steps:
        print(f"| {s.batch} | {s.median_s:.2f} | {s.samples_per_s:.3f} |")
    print("\n| cache | workers | batch | first batch s | loader samples/s | (whole epoch) | CPU ms/sample | loader/step "
          "| >= 4x |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in loaders:
        print(f"| {r.variant} | {r.workers} | {r.batch} | {r.first_batch_s:.3f} | {r.samples_per_s:.1f} | "
              f"{r.epoch_samples_per_s:.1f} | {r.cpu_ms_per_sample:.1f} | {r.ratio:.0f} | "
              f"{'yes' if r.goal_met else 'NO'} |")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; prints tables (and a JSON line with ``--json``); returns the results."""
    args = _parse_args(argv)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        work = Path(args.workdir or tmp)
        datalist = write_cases(work / ("synth_tiny" if args.tiny else "synth_full"), args.cases, args.tiny)
        datasets, caches, parser = {}, [], None
        for variant in args.variants:
            out = work / f"cache_{variant}"
            shutil.rmtree(out, ignore_errors=True)  # a fresh cache: a reused disk cache would build in no time
            start = time.perf_counter()
            datasets[variant], p = build_dataset(variant, datalist, out, args.overrides)
            build_s = time.perf_counter() - start
            parser = parser or p
            names = _names(datasets[variant].transform) + _names(datasets[variant].sample_transform)
            caches.append(CacheResult(variant=variant, cases=len(datalist), samples=len(datasets[variant]),
                                      build_s_per_case=build_s / len(datalist),
                                      mb_per_case=cache_bytes(datasets[variant], out / "cache") / MB / len(datalist),
                                      dtypes=cached_dtypes(datasets[variant]), transforms=names))
            print(f"  built {variant}: {build_s:.1f} s, {len(datasets[variant])} samples", flush=True)
        medians = bench_loaders(datasets, args.workers, args.batches, args.epochs)
        steps = bench_steps(parser, datasets[args.variants[0]], args.batches, args.steps, args.warmup)
        step_rate = {s.batch: s.samples_per_s for s in steps}
        loaders = [LoaderResult(variant=v, workers=w, batch=b, first_batch_s=f, samples_per_s=r,
                                epoch_samples_per_s=e, cpu_ms_per_sample=c, step_samples_per_s=step_rate[b], ratio=r / step_rate[b],
                                goal_met=r / step_rate[b] >= GOAL_RATIO)
                   for (v, w, b), (f, r, e, c) in medians.items()]
        _report(args, caches, loaders, steps, parser)
    total = time.perf_counter() - t_start
    print(f"total {total:.0f} s")
    results = {"machine": cpu_name(), "cores": os.cpu_count(), "load_average": os.getloadavg()[0], "tiny": args.tiny,
               "total_s": total, "caches": [asdict(c) for c in caches], "steps": [asdict(s) for s in steps],
               "loaders": [asdict(r) for r in loaders]}
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
