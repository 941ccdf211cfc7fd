"""``python -m pipeline <command>``: argument parsing only; the work is done by the modules it calls.

Commands:
    synth       write a synthetic LUNA16 (CT phantoms + lung masks in the seed's layout)
    preprocess  the seed's ``normalize_dataset ROOT VOX_SPACING Z_MAX Y_MAX X_MAX``
    train       the seed's training command line, mapped onto the bundle (one training path)
    segment     segment CTs into lungs in their own geometry
    export      MONAI's ckpt_export / onnx_export, written atomically

Expected errors (bad files or arguments) print one line, ``error: ...``, and exit with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic LUNA16 dataset", description=(
        "Write CT phantoms with LUNA16-style lung masks (labels 3 left lung, 4 right lung, 5 trachea) in the seed's"
        " layout: OUT/lung_ct_image/<uid>.mhd and OUT/seg-lungs-LUNA16/<uid>.mhd."))
    p.add_argument("out", help="output folder (the dataset root)")
    p.add_argument("--cases", type=int, default=8, help="number of cases (default 8)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same bytes (default 0)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), default=None,
                   help="voxels per case (default: in-plane 128, slices drawn per case)")
    p.add_argument("--full-size", action="store_true", help="512 x 512 x N scans, like real LUNA16 (for benchmarks)")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from pipeline.synthetic import generate_dataset

    if args.cases < 1:
        raise _input_error(f"--cases must be at least 1, got {args.cases}")
    if args.shape is not None and any(s < 16 for s in args.shape):
        raise _input_error(f"--shape must be at least 16 voxels per axis, got {tuple(args.shape)}")
    uids = generate_dataset(args.out, cases=args.cases, seed=args.seed, shape=tuple(args.shape) if args.shape else None,
                            full_size=args.full_size, workers=args.workers)
    print(f"wrote {len(uids)} synthetic cases to {args.out}")
    return 0


def _add_preprocess(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="the seed's normalize_dataset", description=(
        "Resample every case to VOX_SPACING mm, map the LUNA16 labels to lung, centre-crop/pad to Z_MAX x Y_MAX x X_MAX"
        " voxels and write ROOT/normalized_lung_ct and ROOT/normalized_lung_mask (the seed's normalize_dataset.py"
        " arguments, in its order; inside the bundle the size is (X, Y, Z))."))
    p.add_argument("root", help="LUNA16 root: lung_ct_image/ + seg-lungs-LUNA16/, or subset0..9/ + seg-lungs-LUNA16/")
    p.add_argument("vox_spacing", type=float, help="isotropic voxel size in mm (reference: 2.5)")
    p.add_argument("z_max", type=int, help="slices after crop/pad (reference: 128)")
    p.add_argument("y_max", type=int, help="rows after crop/pad (reference: 160)")
    p.add_argument("x_max", type=int, help="columns after crop/pad (reference: 160)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: min(8, CPU count))")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose outputs exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_preprocess)


def _run_preprocess(args: argparse.Namespace) -> int:
    from pipeline.preprocess import preprocess_dataset

    results = preprocess_dataset(args.root, args.vox_spacing, (args.x_max, args.y_max, args.z_max),
                                 workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress)
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    failed = [r for r in results if r.status == "failed"]
    print(f"preprocess: {done} done, {skipped} skipped, {len(failed)} failed")
    return 1 if failed else 0


def _input_error(message: str) -> Exception:
    from transforms.errors import InputError

    return InputError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks for expected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_synth(sub)
    _add_preprocess(sub)
    from pipeline import export, train_cli

    train_cli.add_parser(sub)
    export.add_parser(sub)
    try:
        from pipeline import segment
    except ImportError:  # pragma: no cover - the segmentation tool is optional at import time
        segment = None
    if segment is not None and hasattr(segment, "add_parser"):
        segment.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    from transforms.errors import InputError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except (InputError, FileNotFoundError, NotADirectoryError, PermissionError) as e:
        if debug:
            raise
        msg = str(e) if isinstance(e, InputError) else f"{e.strerror or e}: '{e.filename}'"
        msg = " ".join(line.strip() for line in msg.splitlines() if line.strip())
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
