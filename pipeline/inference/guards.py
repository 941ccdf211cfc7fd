"""What the segment tool checks of its own output: lung only inside the body, and flags for results to look at.

* :func:`body_mask`: the patient's body from the CT itself, on the network grid. Tissue (> -500 HU), its largest
  3-D component (the table and cushions, separate from the body, drop out), then per axial slice everything the
  tissue encloses (lungs, airways, bowel gas). A field of view that cuts through the body leaves the body open on
  that side: a slice edge that the body touches along at least a tenth of its length closes it there. Air around
  the body, under it and outside the scanner's field of view (-2048 / -3024) is outside.
* :func:`case_flags`: the ``flags`` column of ``lung_stats.csv``, each with the warning line printed for it.

MONAI has no body mask or plausibility checks for lung masks; scipy.ndimage does the morphology.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["BODY_HU", "FLAGS", "Flag", "body_mask", "case_flags"]

#: tissue threshold of the body mask (HU): fat is about -100, lung -900..-500, air -1000
BODY_HU = -500.0
#: a slice edge touched by the body along at least this share of its length is where the field of view cuts it
CUT_EDGE_SHARE = 0.1
#: lung volume ranges (mL) of an adult chest scanned from apex to base, and the extent (mm) that counts as that
FULL_CHEST_ML = (1500.0, 9000.0)
FULL_CHEST_MM = 250.0
#: the smaller lung below this share of the larger one is "unbalanced" (right is normally ~55 % of the total)
MIN_SIDE_SHARE = 0.33
#: scans covering less than this (mm, head to foot) hold only part of the lungs: volumes are not comparable
THIN_SCAN_MM = 100.0
#: lung outside the body below this (mL) is removed without a flag: voxels where the body's edge and the resampled
#: lung meet, not a model that misreads the scan
OUTSIDE_BODY_MIN_ML = 5.0
#: the flags, in the order the CSV lists them
FLAGS = ("outside_body", "no_lung", "implausible_volume", "unbalanced", "thin_scan")


@dataclass(frozen=True)
class Flag:
    """One flag of a case: its name (a :data:`FLAGS` entry) and the warning line for the user."""

    name: str
    message: str


def _closed_slice(tissue: np.ndarray) -> np.ndarray:
    """One axial slice: tissue plus what it encloses, closed along edges where the field of view cuts the body."""
    padded = np.pad(tissue, 1)
    for side, edge in (((0, slice(None)), tissue[0]), ((-1, slice(None)), tissue[-1]),
                       ((slice(None), 0), tissue[:, 0]), ((slice(None), -1), tissue[:, -1])):
        if edge.mean() >= CUT_EDGE_SHARE:
            padded[side] = True
    return ndimage.binary_fill_holes(padded)[1:-1, 1:-1] | tissue


def body_mask(hu: np.ndarray, axial_axis: int = 2) -> np.ndarray:
    """Boolean body mask of a CT in HU (see the module docstring).

    Args:
        hu: the CT, any 3-D grid (the segment tool passes the network grid, (X, Y, Z) in RAS).
        axial_axis: the array axis running head to foot.

    Returns:
        bool array of ``hu``'s shape; all False when no tissue is found.
    """
    tissue = hu > BODY_HU
    labels, n = ndimage.label(tissue)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    body = labels == (1 + int(np.argmax(sizes)))
    moved = np.moveaxis(body, axial_axis, 0)
    closed = np.stack([_closed_slice(s) if s.any() else s for s in moved])
    return np.moveaxis(closed, 0, axial_axis)


def case_flags(right_ml: float, left_ml: float, extent_mm: float, outside_ml: float = 0.0,
               sides: bool = True) -> list[Flag]:
    """The flags of one segmented CT.

    Args:
        right_ml, left_ml: lung volumes after the guards (for binary labels the total may be all "right").
        extent_mm: the scan's head-to-foot extent (mm).
        outside_ml: lung the network placed outside the body (removed before the statistics); flagged from
            :data:`OUTSIDE_BODY_MIN_ML`.
        sides: whether right and left were separated (``False``: no ``unbalanced`` check).
    """
    total = right_ml + left_ml
    flags: list[Flag] = []
    if outside_ml >= OUTSIDE_BODY_MIN_ML:
        flags.append(Flag("outside_body", f"the network labelled {outside_ml:.0f} mL outside the body as lung; removed "
                                          "(a sign that the model does not fit this scan: check the QC picture)"))
    if total <= 0:
        flags.append(Flag("no_lung", "no lung found: not a chest scan, or the model failed on it"))
    elif extent_mm >= FULL_CHEST_MM and not FULL_CHEST_ML[0] <= total <= FULL_CHEST_ML[1]:
        flags.append(Flag("implausible_volume", f"{total:.0f} mL of lung in a scan {extent_mm:.0f} mm long: an adult "
                                                f"chest holds {FULL_CHEST_ML[0]:.0f}-{FULL_CHEST_ML[1]:.0f} mL"))
    elif extent_mm < FULL_CHEST_MM and total > FULL_CHEST_ML[1] * extent_mm / FULL_CHEST_MM:
        limit = FULL_CHEST_ML[1] * extent_mm / FULL_CHEST_MM
        flags.append(Flag("implausible_volume", f"{total:.0f} mL of lung in a scan only {extent_mm:.0f} mm long "
                                                f"(at most ~{limit:.0f} mL fit)"))
    if sides and total > 0 and min(right_ml, left_ml) < MIN_SIDE_SHARE * max(right_ml, left_ml):
        flags.append(Flag("unbalanced", f"right {right_ml:.0f} mL, left {left_ml:.0f} mL: one lung is missing or"
                                        " mostly missed (or the other over-segmented)"))
    if extent_mm < THIN_SCAN_MM:
        flags.append(Flag("thin_scan", f"the scan covers {extent_mm:.0f} mm head to foot (a whole chest is ~"
                                       f"{FULL_CHEST_MM:.0f} mm): volumes are of the part scanned"))
    return flags
