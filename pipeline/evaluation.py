"""Per-case evaluation: Dice, error rate, HD95, average surface distance and lung volumes, as a CSV.

:class:`CaseMetricsWriter` is an evaluator handler (``evaluate.json``): for each validation volume it
computes the metrics on the evaluated grid (the bundle's 2.5 mm grid; distances and volumes use its
spacing, so they are in mm and mL), writes ``metrics_per_case.csv`` and ``metrics_summary.json`` under
``output_dir`` atomically, and prints the summary.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

from pipeline import device as devices
from pipeline.files import atomic_write_text
from pipeline.handlers import voxel_errors

__all__ = ["CSV_COLUMNS", "CaseMetricsWriter", "case_metrics"]

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "uid",
    "dice",
    "error_rate_pct",
    "error_rate_octants_pct",
    "hd95_mm",
    "asd_mm",
    "pred_volume_ml",
    "true_volume_ml",
)
MM3_PER_ML = 1000.0


def _spacing(img: Any) -> tuple[float, ...]:
    affine = getattr(img, "affine", None)
    if affine is None:
        return (1.0, 1.0, 1.0)
    a = torch.as_tensor(affine, dtype=torch.float64)
    return tuple(float(v) for v in torch.linalg.norm(a[:3, :3], dim=0))


def case_metrics(
    pred: torch.Tensor, label: torch.Tensor, spacing: Sequence[float], octant_split: Sequence[int] | None = (2, 2, 2)
) -> dict[str, float]:
    """Metrics of one case.

    Args:
        pred: (2, X, Y, Z) one-hot prediction.
        label: (2, X, Y, Z) one-hot ground truth.
        spacing: voxel size (x, y, z) in mm.
        octant_split: split for the octant error rate (``None`` to skip it).

    Returns:
        dict with the :data:`CSV_COLUMNS` metric keys (NaN where undefined, e.g. HD95 of an empty mask).
    """
    p, y = pred[None].float(), label[None].float()
    dice = float(compute_dice(p, y, include_background=False)[0, 0])
    err = voxel_errors(p, y)[0]
    row = {"dice": dice, "error_rate_pct": float(100.0 * err[0] / err[1])}
    try:
        e8 = voxel_errors(p, y, octant_split)[0] if octant_split else None
        row["error_rate_octants_pct"] = float(100.0 * e8[0] / e8[1]) if e8 is not None and e8[1] > 0 else math.nan
    except ValueError:
        row["error_rate_octants_pct"] = math.nan
    with np.errstate(all="ignore"):
        hd = compute_hausdorff_distance(p, y, include_background=False, percentile=95, spacing=list(spacing))
        asd = compute_average_surface_distance(p, y, include_background=False, symmetric=True, spacing=list(spacing))
    row["hd95_mm"] = float(hd[0, 0])
    row["asd_mm"] = float(asd[0, 0])
    voxel_ml = float(np.prod(spacing)) / MM3_PER_ML
    row["pred_volume_ml"] = float(pred[1].sum()) * voxel_ml
    row["true_volume_ml"] = float(label[1].sum()) * voxel_ml
    return row


class CaseMetricsWriter:
    """Evaluator handler writing one CSV row per case and a summary (rank 0 writes).

    Args:
        output_dir: folder for ``metrics_per_case.csv`` and ``metrics_summary.json``.
        octant_split: split for the octant error rate (the reference's metric).
        print_summary: also print the summary to stdout.
    """

    def __init__(self, output_dir: str | Path, octant_split: Sequence[int] | None = (2, 2, 2), print_summary: bool = True):
        self.output_dir = Path(output_dir)
        self.octant_split = tuple(octant_split) if octant_split else None
        self.print_summary = print_summary
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _iteration(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for out, item in zip(outputs, batch):
            pred, label = out["pred"], out["label"]
            uid = item.get("uid") if isinstance(item, dict) else None
            if uid is None:
                meta = getattr(item.get("image"), "meta", {}) if isinstance(item, dict) else {}
                uid = Path(str(meta.get("filename_or_obj", f"case{len(self.rows)}"))).name
            row = {"uid": str(uid)}
            row.update(case_metrics(pred.detach().cpu(), label.detach().cpu(), _spacing(pred), self.octant_split))
            self.rows.append(row)

    def summary(self) -> dict[str, float]:
        out: dict[str, float] = {"cases": float(len(self.rows))}
        for col in CSV_COLUMNS[1:]:
            values = np.array([r[col] for r in self.rows], dtype=float)
            finite = values[np.isfinite(values)]
            out[f"mean_{col}"] = float(finite.mean()) if finite.size else math.nan
            out[f"median_{col}"] = float(np.median(finite)) if finite.size else math.nan
        return out

    def _gather_rows(self) -> None:
        """Under DDP each rank evaluated a shard: collect every rank's rows (object collective over gloo)."""
        if devices.get_world_size() <= 1 or not torch.distributed.is_initialized():
            return
        parts: list[list[dict[str, Any]]] = [[] for _ in range(devices.get_world_size())]
        torch.distributed.all_gather_object(parts, self.rows)
        seen: set[str] = set()
        rows = []
        for part in parts:
            for row in part:
                if row["uid"] not in seen:  # a case evaluated by several ranks (padding of the sampler) counts once
                    seen.add(row["uid"])
                    rows.append(row)
        self.rows = sorted(rows, key=lambda r: r["uid"])

    def _write(self, engine: Engine) -> None:
        self._gather_rows()
        if not devices.is_main_process():
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        atomic_write_text(self.output_dir / "metrics_per_case.csv", buf.getvalue())
        summary = self.summary()
        atomic_write_text(self.output_dir / "metrics_summary.json", json.dumps(summary, indent=2) + "\n")
        text = (
            f"evaluation over {len(self.rows)} cases: mean Dice {summary['mean_dice']:.4f}, error rate "
            f"{summary['mean_error_rate_pct']:.3f} % (octants {summary['mean_error_rate_octants_pct']:.3f} %), "
            f"HD95 {summary['mean_hd95_mm']:.2f} mm, ASD {summary['mean_asd_mm']:.2f} mm -> {self.output_dir}"
        )
        logger.info(text)
        if self.print_summary:
            print(text, flush=True)
