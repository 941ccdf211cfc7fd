"""Per-case evaluation: Dice, error rate, HD95, average surface distance and lung volumes, as a CSV.

:class:`CaseMetricsWriter` is an evaluator handler (``evaluate.json``, ``multi_gpu_evaluate.json``): for each
validation volume it computes the metrics twice:

* on the evaluated grid (the bundle's 2.5 mm grid, cropped or padded to ``spatial_size``; distances and
  volumes use its spacing, so they are in mm and mL): columns without a prefix;
* in the scan's own geometry: the prediction is mapped back through the inverse of the preprocessing
  (MONAI's ``Invertd``: crop/pad, resampling, orientation undone; nearest neighbour) and compared with the
  mask file as it is on disk, so lung cut off by the crop counts as missed: columns prefixed ``orig_``.

It writes ``metrics_per_case.csv`` and ``metrics_summary.json`` under ``output_dir`` atomically and prints
the summary.
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
from monai.transforms import Invertd

from pipeline import device as devices
from pipeline.files import atomic_write_text
from pipeline.training.metrics import CASE_METRICS, case_metrics, spacing_of

__all__ = ["CSV_COLUMNS", "ORIGINAL_METRICS", "POOLED_ERROR", "POOLED_ERROR_REFERENCE_BN", "SUMMARY_FILE",
           "CaseMetricsWriter", "ReferenceBatchNormSummary"]

logger = logging.getLogger(__name__)

#: metrics in each scan's own geometry (the prediction inverted to the mask file's grid)
ORIGINAL_METRICS = ("orig_dice", "orig_hd95_mm", "orig_asd_mm", "orig_pred_volume_ml", "orig_true_volume_ml")
#: columns of ``metrics_per_case.csv``: the case id, :data:`pipeline.training.metrics.CASE_METRICS` on the
#: evaluated grid, then :data:`ORIGINAL_METRICS`
CSV_COLUMNS = ("uid", *CASE_METRICS, *ORIGINAL_METRICS)
SUMMARY_FILE = "metrics_summary.json"
#: summary keys of the reference's error (%): octant voxels of every case pooled; BatchNorm on running statistics ...
POOLED_ERROR = "pooled_error_rate_octants_pct"
#: ... and on each batch's statistics, batches of octants as the reference tests (``reference_batch_norm``)
POOLED_ERROR_REFERENCE_BN = "pooled_error_rate_octants_reference_bn_pct"


class CaseMetricsWriter:
    """Evaluator handler writing one CSV row per case and a summary (rank 0 writes).

    Args:
        output_dir: folder for ``metrics_per_case.csv`` and ``metrics_summary.json``.
        octant_split: split for the octant error rate (the reference's metric): the bundle's ``octant_split``.
        drop_empty: leave octants without lung out of that rate: the bundle's ``drop_empty_octants``.
        print_summary: also print the summary to stdout.
        invert: the preprocessing the evaluated image went through (``validate#preprocessing``), whose inverse
            maps the prediction back to the scan's grid; ``None``: no ``orig_`` metrics (NaN).
        original_label: loads a mask file as it is, lung > 0 (``{label_key: path}`` -> ``(1, *spatial)``); the
            path is the evaluated label's ``filename_or_obj``.
        image_key, label_key: keys of the image (carrying the applied operations) and the label.
    """

    def __init__(self, output_dir: str | Path, octant_split: Sequence[int] | None, drop_empty: bool,
                 print_summary: bool = True, invert: Any = None, original_label: Any = None,
                 image_key: str = "image", label_key: str = "label"):
        self.output_dir = Path(output_dir)
        self.octant_split = tuple(octant_split) if octant_split else None
        self.drop_empty = bool(drop_empty)
        self.print_summary = print_summary
        self.image_key, self.label_key = image_key, label_key
        self.original_label = original_label
        self.inverter = (Invertd(keys="pred", transform=invert, orig_keys=image_key, nearest_interp=True,
                                 to_tensor=True) if invert is not None and original_label is not None else None)
        self._warned = False
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
            row.update(case_metrics(pred.detach().cpu(), label.detach().cpu(), spacing_of(pred), self.octant_split,
                                    self.drop_empty))
            row.update(self._original_metrics(out, str(uid)))
            self.rows.append(row)

    def _original_metrics(self, out: dict, uid: str) -> dict[str, float]:
        """The ``orig_`` metrics: the prediction inverted to the mask file's grid against that file."""
        missing = dict.fromkeys(ORIGINAL_METRICS, math.nan)
        path = getattr(out.get(self.label_key), "meta", {}).get("filename_or_obj")
        if self.inverter is None or not path or self.image_key not in out:
            return missing
        pred = self.inverter({"pred": out["pred"].detach().cpu(), self.image_key: out[self.image_key]})["pred"]
        truth = self.original_label({self.label_key: path})[self.label_key]
        if tuple(pred.shape[1:]) != tuple(truth.shape[1:]):
            if not self._warned:
                logger.warning(f"case {uid}: the prediction could not be mapped back to the mask's grid "
                               f"({tuple(pred.shape[1:])} vs {tuple(truth.shape[1:])}: a preprocessing without an "
                               "inverse, such as reference_grid); orig_ metrics are NaN")
                self._warned = True
            return missing
        lung_pred = torch.as_tensor(pred).argmax(0) > 0 if pred.shape[0] > 1 else torch.as_tensor(pred)[0] > 0
        lung_true = torch.as_tensor(truth)[0] > 0
        both = [torch.stack([~m, m]).float() for m in (lung_pred, lung_true)]
        m = case_metrics(both[0], both[1], spacing_of(truth), None, False)
        return {"orig_dice": m["dice"], "orig_hd95_mm": m["hd95_mm"], "orig_asd_mm": m["asd_mm"],
                "orig_pred_volume_ml": m["pred_volume_ml"], "orig_true_volume_ml": m["true_volume_ml"]}

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
        # the reference's figure: every case's lung-containing octant voxels pooled (the evaluator's key metric)
        pooled = float(engine.state.metrics.get(getattr(engine.state, "key_metric_name", None) or "", math.nan))
        summary[POOLED_ERROR] = pooled
        atomic_write_text(self.output_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        text = (
            f"evaluation over {len(self.rows)} cases: mean Dice {summary['mean_dice']:.4f}, error rate "
            f"{summary['mean_error_rate_pct']:.3f} % (octants {summary['mean_error_rate_octants_pct']:.3f} %; "
            f"pooled over all cases as the reference reports it {pooled:.3f} %, BatchNorm running statistics), "
            f"HD95 {summary['mean_hd95_mm']:.2f} mm, ASD {summary['mean_asd_mm']:.2f} mm on the evaluated grid; "
            f"in the scans' own geometry: mean Dice {summary['mean_orig_dice']:.4f}, HD95 "
            f"{summary['mean_orig_hd95_mm']:.2f} mm -> {self.output_dir}"
        )
        logger.info(text)
        if self.print_summary:
            print(text, flush=True)


class ReferenceBatchNormSummary:
    """Evaluator handler of ``reference_batch_norm``: add its error to ``metrics_summary.json`` and print it.

    Attached to the evaluator that runs the reference's way (:class:`pipeline.training.engines.BatchStatisticsInferer`
    over batches of octants); :class:`CaseMetricsWriter` has written the summary of our own evaluation before.

    Args:
        output_dir: the folder of ``metrics_summary.json``.
        batch_size: octants per batch (printed, since the result depends on it).
    """

    def __init__(self, output_dir: str | Path, batch_size: int) -> None:
        self.output_dir = Path(output_dir)
        self.batch_size = int(batch_size)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _write(self, engine: Engine) -> None:
        if not devices.is_main_process():
            return
        error = float(engine.state.metrics.get(engine.state.key_metric_name, math.nan))
        path = self.output_dir / SUMMARY_FILE
        summary = json.loads(path.read_text()) if path.is_file() else {}
        summary[POOLED_ERROR_REFERENCE_BN] = error
        summary["reference_bn_batch_size"] = self.batch_size
        atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
        text = (f"evaluation the reference's way (BatchNorm on the statistics of each batch of {self.batch_size} "
                f"octants): error rate {error:.3f} % ({POOLED_ERROR_REFERENCE_BN}; ours with running statistics: "
                f"{summary.get(POOLED_ERROR, math.nan):.3f} %) -> {path}")
        logger.info(text)
        print(text, flush=True)
