"""Benchmark (not a test): report.html over a cohort: page size and the time of each rewrite.

Segments N small synthetic phantoms (``pipeline.data.synthetic``) with the segment tool's own loop
(:func:`pipeline.inference.segmenter.segment_inputs`, QC pictures on) and a stand-in network that thresholds the
CT (so the run times the report, not a V-Net), and records every rewrite of ``report.html`` (one after each scan,
one at the end). Prints the final page size and the median and longest rewrite, with the machine.

    python benchmarks/report.py                 # 200 phantoms (~2 minutes on 2 cores)
    python benchmarks/report.py --scans 3 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from segment import cpu_name

__all__ = ["ThresholdNetwork", "main"]

SHAPE = (48, 48, 32)  # phantom voxels (X, Y, Z): small, so that the 200 scans take about two minutes


class ThresholdNetwork(torch.nn.Module):
    """Normalised HU in, two-class logits out: lung where the CT is darker than -500 HU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from transforms.functional import LUNA16_HU_MEAN, LUNA16_HU_STD

        hu = x * LUNA16_HU_STD + LUNA16_HU_MEAN
        return torch.cat([torch.zeros_like(hu), -500.0 - hu], dim=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scans", type=int, default=200, help="phantoms to segment (default 200)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = parser.parse_args(argv)
    if args.scans < 1:
        parser.error("--scans must be at least 1")
    import pipeline.inference.run_report as run_report
    from pipeline.data.synthetic import generate_dataset
    from pipeline.inference.segmenter import LungSegmenter, segment_inputs

    rewrites: list[float] = []
    original = run_report.write_run_report

    def timed(*a, **kw):
        start = time.perf_counter()
        path = original(*a, **kw)
        rewrites.append(time.perf_counter() - start)
        return path

    with tempfile.TemporaryDirectory(prefix="bench_report_") as tmp:
        data = Path(tmp) / "data"
        generate_dataset(data, cases=args.scans, seed=0, shape=SHAPE, workers=2)
        inputs = sorted((data / "lung_ct_image").glob("*.mhd"))
        segmenter = LungSegmenter(ThresholdNetwork(), device="cpu", overrides={"vox_spacing": 2.5})
        import pipeline.inference.segmenter as segmenter_module

        segmenter_module.write_run_report = timed
        start = time.perf_counter()
        try:
            results = segment_inputs(inputs, Path(tmp) / "out", segmenter, progress=False)
        finally:
            segmenter_module.write_run_report = original
        total = time.perf_counter() - start
        size = (Path(tmp) / "out" / run_report.REPORT_HTML).stat().st_size
    done = sum(r.status == "done" for r in results)
    figures = {"scans": args.scans, "done": done, "page_bytes": size, "rewrites": len(rewrites),
               "rewrite_median_s": statistics.median(rewrites), "rewrite_max_s": max(rewrites), "run_s": total}
    print(f"machine: {cpu_name()}; {args.scans} phantoms {SHAPE} segmented in {total:.1f} s ({done} done)")
    print(f"report.html: {size / 1e6:.3f} MB; {len(rewrites)} rewrites, median {figures['rewrite_median_s']:.3f} s,"
          f" longest {figures['rewrite_max_s']:.3f} s")
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
