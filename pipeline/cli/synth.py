"""``python -m pipeline synth OUT``: a synthetic LUNA16 (CT phantoms with lung masks) for demos and tests."""

from __future__ import annotations

import argparse

from transforms.errors import InputError

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic LUNA16 dataset", description=(
        "Write CT phantoms with LUNA16-style lung masks (labels 3 left lung, 4 right lung, 5 trachea) in the "
        "reference's layout: OUT/lung_ct_image/<uid>.mhd and OUT/seg-lungs-LUNA16/<uid>.mhd. By default an adult "
        "chest at true scale (trunk 280-380 mm wide, lungs 2-5 L; whole chests, abdomen scans of the lung bases and "
        "cropped fields of view) drawn on a coarse 128 x 128 grid of 1.4-5.3 mm pixels."))
    p.add_argument("out", help="output folder (the dataset root)")
    p.add_argument("--cases", type=int, default=8, help="number of cases (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes (default 0)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None,
                   help="voxels per case of a small patient that fills the grid (0.6-0.9 mm pixels; for fast tests)")
    p.add_argument("--full-size", action="store_true",
                   help="the adult chest on LUNA16's grid: 512 x 512 pixels of 0.5-0.98 mm (for benchmarks)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pipeline.data.synthetic import generate_dataset

    if args.cases < 1:
        raise InputError(f"--cases must be at least 1, got {args.cases}")
    if args.shape is not None and any(s < 16 for s in args.shape):
        raise InputError(f"--shape must be at least 16 voxels per axis, got {tuple(args.shape)}")
    uids = generate_dataset(args.out, cases=args.cases, seed=args.seed, shape=tuple(args.shape) if args.shape else None,
                            full_size=args.full_size, workers=args.workers)
    print(f"wrote {len(uids)} synthetic cases to {args.out}")
    return 0
