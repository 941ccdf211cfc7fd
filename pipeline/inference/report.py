"""What the segmentation tool reports per CT: lung statistics, the ``lung_stats.csv`` row and the QC picture.

Used by :mod:`pipeline.inference.segmenter`; usable on their own for any CT and mask on the same grid::

    stats = lung_stats(ct, mask)                       # SimpleITK images, labels 1 right / 2 left
    update_stats_csv("out/lung_stats.csv", stats_row("ct.mhd", "out/ct_lung.mhd", stats, runtime_s=12.5))
    write_qc_png("out/ct_qc.png", ct, mask, title="ct.mhd")

Everything works on SimpleITK images without full-size copies: statistics are accumulated slab by
slab, the picture needs three slices.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipeline.files import atomic_path, atomic_write_text
from transforms.functional import HU_MAX, HU_MIN, LEFT_LUNG, RIGHT_LUNG
from transforms.geometry import voxel_volume_ml

__all__ = ["LEFT_COLOUR", "LUNG_COLOUR", "QC_HU_WINDOW", "RIGHT_COLOUR", "STATS_FIELDS", "LungStats", "lung_stats",
           "stats_row", "update_stats_csv", "write_qc_png"]

SLAB_SLICES = 16  # slices per block when accumulating statistics (bounded float64 temporaries)
QC_HU_WINDOW = (HU_MIN, HU_MAX)  # -1000 .. 400 HU: lung parenchyma, vessels and soft tissue visible
QC_DISPLAY_ORIENTATION = "LPS"  # array columns run to the patient's left: the patient's right is on the image left
# Pure, saturated outline colours: a grey CT pixel never has R != B, so outlines are easy to find (and count).
RIGHT_COLOUR = (1.0, 0.0, 0.0)
LEFT_COLOUR = (0.0, 0.45, 1.0)
LUNG_COLOUR = (1.0, 0.85, 0.0)  # binary masks
QC_PANEL_INCHES = 5.0
QC_DPI = 110
QC_LINE_WIDTH = 1.0
STATS_FIELDS = ("input", "output", "labels", "right_lung_ml", "left_lung_ml", "total_lung_ml", "mean_hu_right",
                "mean_hu_left", "spacing_x_mm", "spacing_y_mm", "spacing_z_mm", "runtime_s", "flags")
_DECIMALS = 4


@dataclass(frozen=True)
class LungStats:
    """Per-lung volumes (mL) and mean HU; NaN mean where a lung has no voxel.

    Attributes:
        right_ml, left_ml, total_ml: lung volumes, mL (voxel count x voxel volume).
        mean_hu_right, mean_hu_left: mean CT value inside each lung, HU.
        spacing: voxel size (x, y, z), mm.
    """

    right_ml: float
    left_ml: float
    total_ml: float
    mean_hu_right: float
    mean_hu_left: float
    spacing: tuple[float, float, float]


def lung_stats(ct: sitk.Image, mask: sitk.Image) -> LungStats:
    """Volumes and mean HU per lung from a CT and its mask on the same grid.

    Args:
        ct: the CT (any scalar pixel type, HU).
        mask: labels 1 = right lung, 2 = left lung (a binary mask counts as "right"; use its total).

    Raises:
        ValueError: the two images differ in size.
    """
    if ct.GetSize() != mask.GetSize():
        raise ValueError(f"CT size {ct.GetSize()} and mask size {mask.GetSize()} differ")
    hu, labels = sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(mask)  # (z, y, x), no copies
    n_labels = max(RIGHT_LUNG, LEFT_LUNG) + 1
    counts, sums = np.zeros(n_labels, np.int64), np.zeros(n_labels, np.float64)
    for z0 in range(0, labels.shape[0], SLAB_SLICES):
        lab, slab = labels[z0:z0 + SLAB_SLICES], hu[z0:z0 + SLAB_SLICES]
        inside = (lab == RIGHT_LUNG) | (lab == LEFT_LUNG)
        values = lab[inside]
        counts += np.bincount(values, minlength=n_labels)[:n_labels]
        sums += np.bincount(values, weights=slab[inside].astype(np.float64), minlength=n_labels)[:n_labels]
    spacing = tuple(float(s) for s in ct.GetSpacing())
    ml = voxel_volume_ml(spacing)
    means = [float(sums[k] / counts[k]) if counts[k] else math.nan for k in (RIGHT_LUNG, LEFT_LUNG)]
    return LungStats(counts[RIGHT_LUNG] * ml, counts[LEFT_LUNG] * ml, (counts[RIGHT_LUNG] + counts[LEFT_LUNG]) * ml,
                     means[0], means[1], spacing)  # type: ignore[arg-type]


def _fmt(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{_DECIMALS}f}"


def stats_row(source: str, output: str, stats: LungStats, runtime_s: float,
              labels: str = "left-right", flags: Sequence[str] = ()) -> dict[str, str]:
    """One CSV row (see :data:`STATS_FIELDS`); empty mean HU where a lung is absent; ``flags`` space-separated."""
    row = {"input": str(source), "output": str(output), "labels": labels, "flags": " ".join(flags),
           "right_lung_ml": _fmt(stats.right_ml),
           "left_lung_ml": _fmt(stats.left_ml), "total_lung_ml": _fmt(stats.total_ml),
           "mean_hu_right": _fmt(stats.mean_hu_right), "mean_hu_left": _fmt(stats.mean_hu_left),
           "runtime_s": f"{runtime_s:.2f}"}
    row.update({f"spacing_{axis}_mm": f"{s:g}" for axis, s in zip("xyz", stats.spacing, strict=True)})
    return row


def update_stats_csv(path: str | os.PathLike, row: Mapping[str, str], key: str = "input") -> Path:
    """Add ``row`` to the CSV at ``path``, replacing an earlier row for the same input; rewritten atomically.

    The whole file is read, changed and written to a temporary name that is renamed into place, so a
    kill at any moment leaves the old or the new table, never a half-written one. Rows keep their order.
    """
    path = Path(path)
    rows: list[dict[str, str]] = []
    if path.is_file():
        with path.open(newline="") as f:
            rows = [dict(r) for r in csv.DictReader(f)]
    rows = [r for r in rows if r.get(key) != row[key]] + [dict(row)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=STATS_FIELDS, extrasaction="ignore", restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buffer.getvalue())


def _oriented(image: sitk.Image) -> sitk.Image:
    """The image with axes permuted/flipped to LPS (no copy when it already is)."""
    current = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    return image if current == QC_DISPLAY_ORIENTATION else sitk.DICOMOrient(image, QC_DISPLAY_ORIENTATION)


def _centre(labels: np.ndarray) -> tuple[int, int, int]:
    """(z, y, x) index of the lung centroid (the middle of the volume when there is no lung)."""
    centre = []
    for axis in range(3):
        marginal = np.count_nonzero(labels, axis=tuple(a for a in range(3) if a != axis)).astype(np.float64)
        total = marginal.sum()
        idx = (marginal @ np.arange(labels.shape[axis])) / total if total else (labels.shape[axis] - 1) / 2
        centre.append(int(round(idx)))
    return centre[0], centre[1], centre[2]


def write_qc_png(path: str | os.PathLike, ct: sitk.Image, mask: sitk.Image, title: str = "",
                 binary: bool = False, window: Sequence[float] = QC_HU_WINDOW) -> Path:
    """Write axial, coronal and sagittal CT slices through the lung centroid with the mask outlined.

    Radiological display: the patient's right is on the image's left, anterior up (axial), superior up
    (coronal, sagittal); pixels are drawn to scale in mm. Outlines: red = right lung, blue = left lung
    (yellow = lung for a binary mask). Written atomically with matplotlib's Agg canvas (no pyplot state).

    Args:
        path: the PNG to write.
        ct: the CT in HU; mask: its labels on the same grid.
        title: text above the panels (e.g. the input name and volumes).
        binary: the mask is 0/1 lung.
        window: display window (HU min, HU max); default -1000 .. 400.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ct_o, mask_o = _oriented(ct), _oriented(mask)
    hu, labels = sitk.GetArrayViewFromImage(ct_o), sitk.GetArrayViewFromImage(mask_o)  # (z, y, x)
    sx, sy, sz = ct_o.GetSpacing()
    zc, yc, xc = _centre(labels)
    # (slice of CT, slice of labels, pixel width mm, pixel height mm, name); rows flipped so superior is up
    panels = [(hu[zc], labels[zc], sx, sy, "axial"),
              (hu[::-1, yc, :], labels[::-1, yc, :], sx, sz, "coronal"),
              (hu[::-1, :, xc], labels[::-1, :, xc], sy, sz, "sagittal")]
    outlines = [(1, LUNG_COLOUR)] if binary else [(RIGHT_LUNG, RIGHT_COLOUR), (LEFT_LUNG, LEFT_COLOUR)]
    fig = Figure(figsize=(3 * QC_PANEL_INCHES, QC_PANEL_INCHES + 0.6), dpi=QC_DPI, facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    for ax, (image, lab, pw, ph, name) in zip(axes, panels, strict=True):
        rows, cols = image.shape
        ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], extent=(0, cols * pw, rows * ph, 0),
                  interpolation="antialiased")
        xs, ys = (np.arange(cols) + 0.5) * pw, (np.arange(rows) + 0.5) * ph
        for value, colour in outlines:
            region = lab == value
            if region.any() and not region.all():
                ax.contour(xs, ys, region.astype(np.float32), levels=[0.5], colors=[colour], linewidths=QC_LINE_WIDTH)
        ax.set_title(name, color="white", fontsize="small")
        ax.set_axis_off()
    legend = "yellow: lung" if binary else "red: right lung, blue: left lung (image left = patient right)"
    fig.suptitle(f"{title}\n{legend}", color="white", fontsize="small")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.88, wspace=0.03)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", facecolor=fig.get_facecolor())
    return path
