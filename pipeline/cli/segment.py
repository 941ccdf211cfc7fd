"""``python -m pipeline segment INPUT ... --out DIR``: lung masks in each CT's own geometry, volumes, QC pictures
(:mod:`pipeline.inference.segmenter`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pipeline.cases import count_statuses
from pipeline.device import DEVICE_CHOICES
from pipeline.inference.outputs import LABEL_CHOICES, REPORT_HTML, STATS_CSV
from transforms.io import SUPPORTED_SUFFIXES

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``python -m pipeline segment``."""
    p = sub.add_parser("segment", help="segment lungs in CTs (mask in the CT's geometry, volumes, QC picture)",
                       description="Segment the lungs in chest CTs: any CT in, a lung mask in the CT's own geometry"
                                   " out, plus volumes and a QC picture. Nothing is downloaded.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help=f"CT files ({', '.join(SUPPORTED_SUFFIXES)}), DICOM series folders, or folders of either")
    p.add_argument("--out", required=True, help="output folder (masks, <name>_qc.png, lung_stats.csv)")
    p.add_argument("--config", nargs="+", default=None, help="bundle config(s) with network_def, preprocessing and"
                   " inferer, later ones overriding earlier ones (default: bundle/configs/inference.json; for the"
                   " quickstart's model: bundle/configs/inference.json bundle/configs/quick.json)")
    p.add_argument("--model", default=None, help="state dict .pt or TorchScript .ts (default: model.pt in the"
                   " config's ckpt_dir, bundle/models/model.pt)")
    p.add_argument("--device", default=None, choices=DEVICE_CHOICES, help="where the network runs (default: the"
                   " config's device_name, auto)")
    p.add_argument("--labels", choices=LABEL_CHOICES, default="left-right",
                   help="left-right: 1 right lung, 2 left lung (default); binary: 1 lung")
    p.add_argument("--batch-size", type=int, default=None, help="sliding-window batch size (default: the config's)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1) (default: config)")
    p.add_argument("--amp", action="store_true", default=None, help="mixed precision (bfloat16 on CPU; fast only"
                   " where the CPU has native bf16); default: the config's amp, off")
    p.add_argument("--no-postprocess", action="store_true", help="keep the raw network mask (no largest component,"
                   " no hole filling)")
    p.add_argument("--no-body-mask", action="store_true", help="keep lung the network finds outside the body (the"
                   " body mask fails only where the field of view holds almost no body tissue, e.g. a crop inside"
                   " the lungs)")
    p.add_argument("--no-qc", action="store_true", help="no QC picture")
    p.add_argument("--no-report", action="store_true", help="no report.html (one page with every scan: summary,"
                   " sortable table with QC thumbnails, volumes and flags, failures; rewritten after each scan)")
    p.add_argument("--force", action="store_true", help="segment images whose intensities do not look like a CT in"
                   " Hounsfield units (refused otherwise: MR, unscaled or windowed images)")
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.inference.segmenter import LungSegmenter, segment_inputs

    t0 = time.perf_counter()
    segmenter = LungSegmenter(args.model, args.config, args.device, args.labels, args.batch_size, args.overlap,
                              postprocess=not args.no_postprocess, amp=args.amp, force=args.force,
                              body_guard=not args.no_body_mask)
    results = segment_inputs(args.inputs, args.out, segmenter, overwrite=args.overwrite, qc=not args.no_qc,
                             progress=not args.no_progress and sys.stderr.isatty(), report=not args.no_report)
    counts = count_statuses(results)
    print(f"segment: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed in "
          f"{time.perf_counter() - t0:.1f} s -> {args.out} (stats: {Path(args.out) / STATS_CSV}"
          + ("" if args.no_report else f", report: {Path(args.out) / REPORT_HTML}") + ")")
    return 1 if counts["failed"] else 0
