"""``python -m pipeline preprocess ROOT [VOX_SPACING Z_MAX Y_MAX X_MAX] [--reference] [--config FILE ...]``: the
reference's ``normalize_dataset``, with the bundle's transforms (:mod:`pipeline.preprocess`)."""

from __future__ import annotations

import argparse

from pipeline.cases import count_statuses
from transforms.errors import InputError

__all__ = ["add_parser", "parse_grid"]

_NAMES = ("VOX_SPACING", "Z_MAX", "Y_MAX", "X_MAX")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("preprocess", help="the reference's normalize_dataset, with the bundle's transforms",
                       description=(
                           "Resample every case to VOX_SPACING mm, map the LUNA16 labels to lung, centre-crop/pad to"
                           " Z_MAX x Y_MAX x X_MAX voxels and write ROOT/normalized_lung_ct and"
                           " ROOT/normalized_lung_mask (the reference's normalize_dataset.py arguments, in its order;"
                           " inside the bundle the size is spatial_size = [X, Y, Z]). The transforms and every other"
                           " setting come from the bundle config (--config, default bundle/configs/train.json); the"
                           " four numbers, when given, override its vox_spacing and spatial_size."))
    p.add_argument("root", help="LUNA16 root: lung_ct_image/ + seg-lungs-LUNA16/, or subset0..9/ + seg-lungs-LUNA16/")
    p.add_argument("grid", nargs="*", metavar="VOX_SPACING Z_MAX Y_MAX X_MAX",
                   help="isotropic voxel size in mm and slices, rows, columns after crop/pad (reference: 2.5 128 160"
                        " 160); all four or none (then the config's)")
    p.add_argument("--config", nargs="+", default=None, help="bundle config(s), later ones overriding earlier ones"
                   " (default: bundle/configs/train.json; e.g. bundle/configs/train.json bundle/configs/quick.json)")
    p.add_argument("--reference", action="store_true",
                   help="the reference's own grid, voxel for voxel: cubic-spline zoom of CT and mask, its centred"
                        " crop/pad offsets, no reorientation (bundle key reference_grid; the default resampling is"
                        " linear/nearest on a RAS grid); the geometry written is the true one")
    p.add_argument("--workers", type=int, default=None, help="processes (default: min(8, CPU count))")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose outputs exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def parse_grid(values: list[str]) -> tuple[float | None, tuple[int, int, int] | None]:
    """(VOX_SPACING, (X_MAX, Y_MAX, Z_MAX)) from the positional numbers, or (None, None) when none were given.

    Raises:
        InputError: not exactly zero or four numbers, or one that is not a number of the expected kind.
    """
    if not values:
        return None, None
    if len(values) != len(_NAMES):
        raise InputError(f"preprocess takes ROOT and either all of {' '.join(_NAMES)} or none of them, "
                         f"got {len(values)} number(s): {' '.join(values)}")
    try:
        spacing = float(values[0])
    except ValueError:
        raise InputError(f"VOX_SPACING must be a number of mm, got {values[0]!r}") from None
    sizes = []
    for name, value in zip(_NAMES[1:], values[1:]):
        try:
            sizes.append(int(value))
        except ValueError:
            raise InputError(f"{name} must be a whole number of voxels, got {value!r}") from None
    z, y, x = sizes
    return spacing, (x, y, z)


def _run(args: argparse.Namespace) -> int:
    from pipeline.preprocess import preprocess_dataset

    spacing, size = parse_grid(args.grid)
    results = preprocess_dataset(args.root, spacing, size, workers=args.workers, overwrite=args.overwrite,
                                 progress=not args.no_progress, config=args.config,
                                 overrides={"reference_grid": True} if args.reference else None)
    counts = count_statuses(results)
    print(f"preprocess: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    return 1 if counts["failed"] else 0
