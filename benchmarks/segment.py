"""Benchmark of ``python -m pipeline segment``: wall time per stage and peak RSS for one full-size chest CT.

    python benchmarks/segment.py            # 512 x 512 x 300 CT at 0.7 x 0.7 x 1.25 mm, reference-width V-Net
    python benchmarks/segment.py --tiny     # CI smoke run: 128 x 128 x 64 CT, V-Net with init_filters=4

The CT is a synthetic phantom (:func:`pipeline.data.synthetic.generate_case`, its spacing set to LUNA16's median)
written as an uncompressed .mhd, like LUNA16. The V-Net has **random weights**: the timings are those of a
trained model (same operations), the masks are not. Each variant runs in a fresh child process that segments
the CT end to end (read, checks, preprocess, network, left/right + postprocess + resample back, write mask +
QC picture + CSV row) and reports its stage times and its peak RSS (``ru_maxrss``); model loading is timed
separately. Variants:

- ``fp32``: the defaults (bundle config: 80x80x64 windows, no overlap as the reference tiles octants, batch 4).
- ``bf16``: ``--amp`` (bfloat16 autocast on CPU); its mask is compared with fp32's (agreement, Dice).
- ``fp32-ov25`` / ``bf16-ov25``: the same with ``--overlap 0.25`` (more windows, smoother seams).
- ``stub``: a thresholding "network" (lung = HU < -400): the cost of everything but the V-Net, with a
  lung-shaped mask for the postprocessing (a random V-Net's mask is noise).

``--slices 700`` measures the memory bound for long scans (512 x 512 x 700).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

__all__ = ["main"]

FULL_SHAPE = (512, 512, 300)  # (x, y, z) voxels
TINY_SHAPE = (128, 128, 64)
SPACING_MM = (0.7, 0.7, 1.25)  # LUNA16 medians (docs/reference.md)
SEED = 0
TINY_INIT_FILTERS = 4
TARGET_S, TARGET_GB = 20.0, 3.0
STUB_THRESHOLD_HU = -400.0
STAGES = ("load", "preprocess", "network", "invert_postprocess", "write")
VARIANTS = {"fp32": {}, "bf16": {"amp": True}, "fp32-ov25": {"overlap": 0.25}, "bf16-ov25": {"amp": True, "overlap": 0.25},
            "stub": {"stub": True}}  # LungSegmenter options per variant
DEFAULT_VARIANTS = ("fp32", "bf16", "fp32-ov25", "stub")
KB_PER_GB = 1024.0**2


def cpu_name() -> str:
    """CPU model from /proc/cpuinfo (platform's name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_ct(path: Path, shape: tuple[int, int, int]) -> None:
    import SimpleITK as sitk

    from pipeline.data.synthetic import generate_case

    ct, _, _, origin, direction = generate_case(SEED, shape=shape)
    image = sitk.GetImageFromArray(ct)
    image.SetSpacing(SPACING_MM)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path), useCompression=False)


def write_model(folder: Path, tiny: bool) -> tuple[Path, list[str]]:
    """A random-weight V-Net state dict and the configs that build it (the bundle's, plus a narrow overlay if tiny)."""
    import torch

    from pipeline.config import config_file, load_config

    configs = [str(config_file("inference.json"))]
    if tiny:
        overlay = folder / "tiny.json"
        overlay.write_text(json.dumps({"network_def#init_filters": TINY_INIT_FILTERS}))
        configs.append(str(overlay))
    torch.manual_seed(SEED)
    model = folder / "model.pt"
    torch.save(load_config(configs).get_parsed_content("network_def").state_dict(), model)
    return model, configs


def child(spec: dict) -> None:
    """Segment one CT as asked by ``spec``; print a JSON line with timings and peak RSS."""
    import torch

    from pipeline.inference.segmenter import LungSegmenter
    from transforms.functional import LUNA16_HU_MEAN, LUNA16_HU_STD

    class Threshold(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hu = x * LUNA16_HU_STD + LUNA16_HU_MEAN
            return torch.cat([torch.zeros_like(hu), STUB_THRESHOLD_HU - hu], 1)

    t0 = time.perf_counter()
    options = dict(VARIANTS[spec["variant"]])
    model = Threshold() if options.pop("stub", False) else spec["model"]
    segmenter = LungSegmenter(model, spec["config"], device="cpu", **options)
    model_s = time.perf_counter() - t0
    result = segmenter.segment_file(spec["ct"], spec["out"], overwrite=True)
    if result.status != "done":
        raise SystemExit(f"segmentation failed: {result.message}")
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # this process's peak, before anything else
    grid = None
    if spec.get("grid"):  # the network grid, for the table (after the measurement)
        from pipeline.data.checks import read_ct

        grid = list(segmenter.preprocess(read_ct(spec["ct"])).shape[1:])
    print(json.dumps({"timings": result.timings, "total": result.runtime_s, "model_s": model_s,
                      "maxrss_kb": maxrss_kb, "output": result.output, "threads": torch.get_num_threads(),
                      "grid": grid}))


def run_variant(variant: str, ct: Path, model: Path, config: list[str], out: Path, grid: bool) -> dict:
    spec = {"variant": variant, "ct": str(ct), "model": str(model), "config": config,
            "out": str(out / variant), "grid": grid}
    done = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        raise SystemExit(f"{variant}: child failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(path_a: str, path_b: str) -> tuple[float, float]:
    """(fraction of voxels with the same label, Dice of the lung masks) of two mask files."""
    import numpy as np
    import SimpleITK as sitk

    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(p)) for p in (path_a, path_b))
    same = float(np.mean(a == b))
    la, lb = a > 0, b > 0
    total = la.sum() + lb.sum()
    return same, float(2.0 * np.logical_and(la, lb).sum() / total) if total else 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="CI smoke run: small CT and a narrow V-Net")
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--slices", type=int, default=FULL_SHAPE[2], help="CT slices (default 300)")
    parser.add_argument("--workdir", default=None, help="keep the CT, model and outputs here (default: temporary)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child))
        return 0
    shape = TINY_SHAPE if args.tiny else (*FULL_SHAPE[:2], args.slices)
    with tempfile.TemporaryDirectory(prefix="bench_segment_") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        ct = work / f"ct_{'x'.join(map(str, shape))}.mhd"
        if not ct.is_file():
            t0 = time.perf_counter()
            write_ct(ct, shape)
            print(f"wrote synthetic CT {ct} in {time.perf_counter() - t0:.1f} s", flush=True)
        model, config = write_model(work, args.tiny)
        reports = {v: run_variant(v, ct, model, config, work / "out", grid=(i == 0))
                   for i, v in enumerate(args.variants)}
        grid = next(iter(reports.values()))["grid"]
        print(f"\nsegment benchmark: CT {shape[0]}x{shape[1]}x{shape[2]} at {'x'.join(map(str, SPACING_MM))} mm "
              f"(synthetic, .mhd); network grid {'x'.join(map(str, grid))}; "
              f"{'V-Net init_filters=4 (tiny)' if args.tiny else 'reference-width V-Net'} with random weights")
        print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch threads "
              f"{next(iter(reports.values()))['threads']}; load average {os.getloadavg()[0]:.1f} at the end")
        header = f"| variant | model load s | {' | '.join(STAGES)} | total s | peak RSS GB |"
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        for name, r in reports.items():
            cells = " | ".join(f"{r['timings'].get(s, 0.0):.2f}" for s in STAGES)
            print(f"| {name} | {r['model_s']:.2f} | {cells} | {r['total']:.2f} | {r['maxrss_kb'] / KB_PER_GB:.2f} |")
        for a, b in (("fp32", "bf16"), ("fp32-ov25", "bf16-ov25")):
            if a in reports and b in reports:
                same, dice = agreement(reports[a]["output"], reports[b]["output"])
                print(f"{b} vs {a} masks: {same:.4%} of voxels agree, lung Dice {dice:.4f} (random weights)")
        if "fp32" in reports and not args.tiny and shape == FULL_SHAPE:  # the target is for 300 slices
            r = reports["fp32"]
            ok_time, ok_mem = r["total"] < TARGET_S, r["maxrss_kb"] / KB_PER_GB < TARGET_GB
            print(f"target (fp32): < {TARGET_S:g} s {'met' if ok_time else 'NOT met'}, "
                  f"< {TARGET_GB:g} GB {'met' if ok_mem else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
