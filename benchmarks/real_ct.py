"""Benchmark (not a test): a model's accuracy on real CTs that come with reference lung masks.

Runs the segment tool (:class:`pipeline.inference.segmenter.LungSegmenter`, guards included) over every CT in a
folder, pairs each with the reference mask of the same name in another folder (LUNA16's ``seg-lungs-LUNA16`` masks
work: any value > 0 is lung), and prints per scan the Dice of lung against lung in the CT's own geometry, the
volumes, the flags, and the mean Dice.

    python benchmarks/real_ct.py --images LUNA16/subset9 --masks LUNA16/seg-lungs-LUNA16 --model model.ts
    python benchmarks/real_ct.py --images cts/ --masks refs/ --model model.pt --config bundle/configs/inference.json
    python benchmarks/real_ct.py ... --json     # last line: one JSON object
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

__all__ = ["dice", "main", "pair_inputs"]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".mhd", ".mha", ".nrrd", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def pair_inputs(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    """(CT, reference mask) pairs: each CT file or DICOM folder under ``images`` with the mask of the same name."""
    from pipeline.data.inputs import find_ct_inputs

    by_stem = {_stem(p): p for p in masks.iterdir() if p.is_file() and not p.name.endswith((".raw", ".zraw"))}
    pairs = []
    for source in find_ct_inputs(images):
        mask = by_stem.get(_stem(Path(source)))
        if mask is not None:
            pairs.append((Path(source), mask))
    return pairs


def dice(prediction, reference) -> float:
    """Dice of two boolean arrays (NaN when both are empty)."""
    import numpy as np

    total = int(prediction.sum()) + int(reference.sum())
    return float(2 * np.logical_and(prediction, reference).sum() / total) if total else float("nan")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", required=True, type=Path, help="folder of CTs (files or DICOM series folders)")
    parser.add_argument("--masks", required=True, type=Path, help="folder of reference masks named like the CTs")
    parser.add_argument("--model", required=True, help="model.ts (runs at its stored settings) or model.pt")
    parser.add_argument("--config", nargs="+", default=None, help="configs for a .pt (as pipeline segment --config)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the results")
    args = parser.parse_args(argv)
    for name in ("images", "masks"):
        if not getattr(args, name).is_dir():
            parser.error(f"--{name} {getattr(args, name)}: not a folder")
    import numpy as np
    import SimpleITK as sitk
    from segment import cpu_name

    from pipeline.inference.segmenter import LungSegmenter
    from transforms.errors import InputError

    pairs = pair_inputs(args.images, args.masks)
    if not pairs:
        parser.error(f"no CT under {args.images} has a mask of the same name in {args.masks}")
    try:
        segmenter = LungSegmenter(args.model, args.config)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    rows = []
    print(f"machine: {cpu_name()}; model {args.model}; {len(pairs)} scans with reference masks")
    print(f"{'scan':<40} {'Dice':>7} {'ours mL':>9} {'ref mL':>9}  flags")
    for source, mask_path in pairs:
        try:
            seg = segmenter.segment(source)
        except InputError as e:  # one bad scan is reported and skipped, as the segment tool does
            print(f"{source.name:<40} skipped: {e}")
            continue
        ours = sitk.GetArrayFromImage(seg.mask) > 0
        ref_image = sitk.ReadImage(str(mask_path))
        reference = sitk.GetArrayFromImage(ref_image) > 0
        if reference.shape != ours.shape:
            print(f"{source.name:<40} skipped: mask size {ref_image.GetSize()} != CT size {seg.mask.GetSize()}")
            continue
        voxel_ml = float(np.prod(seg.mask.GetSpacing())) / 1000.0
        row = {"scan": source.name, "dice": dice(ours, reference), "ours_ml": float(ours.sum()) * voxel_ml,
               "reference_ml": float(reference.sum()) * voxel_ml, "flags": [f.name for f in seg.flags]}
        rows.append(row)
        print(f"{row['scan']:<40} {row['dice']:>7.4f} {row['ours_ml']:>9.0f} {row['reference_ml']:>9.0f}  "
              f"{' '.join(row['flags'])}")
    scores = [r["dice"] for r in rows if r["dice"] == r["dice"]]
    mean = statistics.mean(scores) if scores else float("nan")
    print(f"mean Dice over {len(scores)} scans: {mean:.4f}")
    if args.json:
        print(json.dumps({"scans": rows, "mean_dice": mean}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
