"""Metrics the reference has and MONAI lacks: its voxel error rate, and the per-case metrics of evaluation.

* :func:`voxel_errors` / :class:`VoxelErrorRate` / :class:`ErrorRate`: the reference's headline metric,
  100 x misclassified voxels / voxels, over whole volumes or over the lung-containing octants only (as the
  reference evaluates its test octants);
* :func:`case_metrics`: Dice, error rates, HD95, average surface distance and volumes of one case, with
  MONAI's metric functions.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.handlers import IgniteMetricHandler
from monai.handlers.utils import from_engine
from monai.metrics import (
    CumulativeIterationMetric,
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
)

from transforms.geometry import voxel_volume_ml

__all__ = ["CASE_METRICS", "ErrorRate", "VoxelErrorRate", "case_metrics", "spacing_of", "voxel_errors"]

def voxel_errors(
    y_pred: torch.Tensor, y: torch.Tensor, octant_split: Sequence[int] | None = None, drop_empty: bool = True
) -> torch.Tensor:
    """Misclassified and total voxel counts per item.

    Args:
        y_pred: (B, C, *spatial) one-hot / probabilities (argmax over C is the class) or (B, 1, *spatial) labels.
        y: ground truth in the same form.
        octant_split: count only within the sub-volumes of this split (e.g. (2, 2, 2)) ...
        drop_empty: ... and skip those whose ground truth has no foreground (the reference's rule).

    Returns:
        (B, 2) float64 tensor of [misclassified voxels, counted voxels].
    """
    pred_lbl = y_pred.argmax(1) if y_pred.shape[1] > 1 else y_pred[:, 0].round()
    true_lbl = y.argmax(1) if y.shape[1] > 1 else y[:, 0].round()
    wrong = pred_lbl != true_lbl
    if octant_split is None:
        counted = torch.ones_like(wrong)
    else:
        spatial = wrong.shape[1:]
        if len(octant_split) != len(spatial) or any(s % k for s, k in zip(spatial, octant_split)):
            raise ValueError(f"spatial size {tuple(spatial)} cannot be split into {tuple(octant_split)} equal parts")
        # (B, k0, s0/k0, k1, s1/k1, ...) -> which sub-volumes contain foreground
        shape = [wrong.shape[0]]
        for s, k in zip(spatial, octant_split):
            shape += [k, s // k]
        fg = (true_lbl > 0).reshape(shape)
        reduce_dims = tuple(range(2, 2 * len(spatial) + 1, 2))
        keep = fg.any(dim=reduce_dims) if drop_empty else torch.ones_like(fg.any(dim=reduce_dims))
        for d, k in enumerate(octant_split):
            keep = keep.repeat_interleave(spatial[d] // k, dim=d + 1)
        counted = keep
    wrong_n = (wrong & counted).flatten(1).sum(1)
    total_n = counted.flatten(1).sum(1)
    return torch.stack([wrong_n, total_n], dim=1).double()


class VoxelErrorRate(CumulativeIterationMetric):
    """The reference's voxel error rate (%), accumulated over all items: 100 x sum(wrong) / sum(voxels).

    Args:
        octant_split: restrict counting to sub-volumes of this split (``(2, 2, 2)``: the octants) ...
        drop_empty: ... that contain foreground in the ground truth (the reference's test set rule).
    """

    def __init__(self, octant_split: Sequence[int] | None = None, drop_empty: bool = True) -> None:
        super().__init__()
        self.octant_split = tuple(octant_split) if octant_split is not None else None
        self.drop_empty = drop_empty

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return voxel_errors(y_pred, y, self.octant_split, self.drop_empty)

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            return torch.tensor(float("nan"))
        wrong, total = data.reshape(-1, 2).sum(0)
        return 100.0 * wrong / total.clamp_min(1)


class ErrorRate(IgniteMetricHandler):
    """Ignite handler for :class:`VoxelErrorRate` (use as ``key_val_metric`` with ``metric_cmp_fn="lower"``)."""

    def __init__(
        self,
        octant_split: Sequence[int] | None = None,
        drop_empty: bool = True,
        output_transform: Callable = from_engine(["pred", "label"]),
        save_details: bool = False,
    ) -> None:
        super().__init__(
            metric_fn=VoxelErrorRate(octant_split=octant_split, drop_empty=drop_empty),
            output_transform=output_transform,
            save_details=save_details,
        )


#: what :func:`case_metrics` returns, in order
CASE_METRICS = ("dice", "error_rate_pct", "error_rate_octants_pct", "hd95_mm", "asd_mm", "pred_volume_ml",
                "true_volume_ml")


def spacing_of(img: Any) -> tuple[float, ...]:
    affine = getattr(img, "affine", None)
    if affine is None:
        return (1.0, 1.0, 1.0)
    a = torch.as_tensor(affine, dtype=torch.float64)
    return tuple(float(v) for v in torch.linalg.norm(a[:3, :3], dim=0))


def case_metrics(
    pred: torch.Tensor, label: torch.Tensor, spacing: Sequence[float], octant_split: Sequence[int] | None,
    drop_empty: bool,
) -> dict[str, float]:
    """Metrics of one case.

    Args:
        pred: (2, X, Y, Z) one-hot prediction.
        label: (2, X, Y, Z) one-hot ground truth.
        spacing: voxel size (x, y, z) in mm.
        octant_split: split for the octant error rate (``None`` to skip it); the bundle's ``octant_split``.
        drop_empty: leave octants without foreground out of that rate; the bundle's ``drop_empty_octants``.

    Returns:
        dict with the :data:`CASE_METRICS` keys (NaN where undefined, e.g. HD95 of an empty mask).
    """
    p, y = pred[None].float(), label[None].float()
    dice = float(compute_dice(p, y, include_background=False)[0, 0])
    err = voxel_errors(p, y)[0]
    row = {"dice": dice, "error_rate_pct": float(100.0 * err[0] / err[1])}
    try:
        e8 = voxel_errors(p, y, octant_split, drop_empty)[0] if octant_split else None
        row["error_rate_octants_pct"] = float(100.0 * e8[0] / e8[1]) if e8 is not None and e8[1] > 0 else math.nan
    except ValueError:
        row["error_rate_octants_pct"] = math.nan
    with np.errstate(all="ignore"), warnings.catch_warnings():
        # MONAI 1.5-1.6 pass their own deprecated get_mask_edges(always_return_as_numpy=...) inside these functions
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy", category=FutureWarning)
        hd = compute_hausdorff_distance(p, y, include_background=False, percentile=95, spacing=list(spacing))
        asd = compute_average_surface_distance(p, y, include_background=False, symmetric=True, spacing=list(spacing))
    row["hd95_mm"] = float(hd[0, 0])
    row["asd_mm"] = float(asd[0, 0])
    voxel_ml = voxel_volume_ml(spacing)
    row["pred_volume_ml"] = float(pred[1].sum()) * voxel_ml
    row["true_volume_ml"] = float(label[1].sum()) * voxel_ml
    return row
