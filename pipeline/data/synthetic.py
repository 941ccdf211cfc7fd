"""Synthetic LUNA16: chest-CT phantoms with known lung masks, written in the reference's LUNA16 layout.

Each case is an int16 HU volume and a uint8 mask with LUNA16's labels (3 left lung, 4 right lung,
5 trachea), stored as ``OUT/lung_ct_image/<uid>.mhd`` + ``.zraw`` and ``OUT/seg-lungs-LUNA16/<uid>.mhd``
+ ``.zraw`` with LUNA16-like geometry: negative origins, LPS world space; every 4th case has a flipped x/y
direction (like some LUNA16 headers) with the anatomy still on the correct side in world coordinates.

**True scale (the default).** An adult chest in millimetres: trunk 280-380 mm wide, lungs 200-280 mm from apex
to base (2-5 L), drawn on a coarse grid by default (128 x 128 pixels of 1.4-5.3 mm, slices of 2.5-3.5 mm: fast,
for recipes that train at 2.5 mm or coarser) or on LUNA16's (``full_size``: 512 x 512 pixels of 0.5-0.98 mm,
slices of 1-2.5 mm). Each scan is a whole chest (60 %), the lung bases under an abdomen (15 %, an abdomen scan)
or a field of view narrower than the chest and off centre (25 %: body and lungs cut at the sides, from below
the domes to the upper lungs, as a reconstruction zoomed on the heart); arms down beside the chest in
about a third; the scanner's out-of-field value (-2048, -3024, -1024 = a stored 0 under a rescale intercept of
-1024, or none); bowel gas under the diaphragm; noise from standard to low dose; emphysematous lungs (darker, with
bullae) in a fifth and one consolidated (airless, still labelled lung) region in about a sixth; contrast agent
(+150..400 HU in heart, aorta and lung vessels) in about a third.
An explicit ``shape`` draws a small patient that fills the grid instead (0.6-0.9 mm pixels, 1-2.5 mm slices,
chest only): the tests' fast phantoms.

Anatomy (in-plane sizes relative to the body, heights relative to the chest's length): air, a scanner table,
subcutaneous fat, soft tissue, two asymmetric lungs (right bigger) on domed diaphragms with brighter vessels,
heart and aorta, trachea (label 5 above the carina) and main bronchi (label 5 outside the lungs; inside a lung
they carry that lung's label), spine with discs, ribs and sternum, liver, a gastric air bubble and Gaussian
noise. The same seed gives the same bytes.

Why our own: MONAI's ``create_test_image_3d`` makes random spheres, not a CT with lungs. (About 550 lines: the
anatomy is one drawing, each structure placed relative to the others.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from pipeline.data.luna16 import IMAGE_DIR, MASK_DIR
from transforms.errors import InputError
from transforms.functional import LUNA16_LEFT_LUNG, LUNA16_RIGHT_LUNG, LUNA16_TRACHEA

__all__ = ["UID_PREFIX", "Tissue", "TISSUE_HU", "SyntheticCase", "render_case", "generate_case", "write_case",
           "generate_dataset", "case_uid"]

UID_PREFIX = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
UID_DIGITS = 30
DEFAULT_INPLANE = 128  # default grid: an adult chest drawn coarse (2.5-4.5 mm pixels), fast to make
DEFAULT_SLICE_SPACING_MM = (2.5, 3.5)
FULL_INPLANE = 512  # --full-size: LUNA16's 512 x 512 x N
FULL_INPLANE_SPACING_MM = (0.5, 0.98)  # LUNA16's in-plane range
MIN_SIZE = 16  # smallest grid (each axis) on which the anatomy is still drawn
INPLANE_SPACING_MM = (0.6, 0.9)  # an explicit shape: a small patient filling the grid (tests' fast phantoms)
SLICE_SPACING_MM = (1.0, 2.5)
# true scale (default and full size): an adult chest in millimetres
BODY_WIDTH_MM = (280.0, 380.0)  # left-right skin to skin
LUNG_HEIGHT_MM = (200.0, 280.0)  # apex to the lowest point of the bases
TRUE_LUNG_WIDTH, TRUE_LUNG_DEPTH = 1.08, 1.12  # lung half-axes over the small patient's (shares of the body)
COVERAGE = (("chest", 0.6), ("bases", 0.15), ("cropped", 0.25))  # whole chest; lung bases (abdomen scan); cropped FOV
ARMS_DOWN = 0.25  # share of scans with the arms down beside the chest (else up, out of the field of view)
EMPHYSEMA, CONSOLIDATION = 0.2, 0.15  # shares of scans with emphysematous lungs / one consolidated region
CONTRAST, CONTRAST_HU = 0.35, (150.0, 400.0)  # share of contrast-enhanced scans; HU the contrast adds to blood
TRUE_SCALE_NOISE_HU = (8.0, 45.0)  # standard dose to low dose at a coarse voxel
TRUE_SCALE_OUT_OF_FIELD = (None, -2048, -3024, -1024)  # -1024: a stored 0 under a rescale intercept of -1024
SLICE_SPACING_STEP_MM = 0.125  # exact binary fractions, like 1.25 and 2.5
FLIP_EVERY = 4  # cases with index % 4 == 3 get a flipped x/y direction
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
FLIPPED_XY = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
OUT_OF_FIELD_CHOICES = (None, -2048, -3024)  # None: no circular field of view
HU_RANGE = (-1024, 3071)  # what a 12-bit CT scanner reports inside its field of view
NOISE_HU = (15.0, 25.0)
PARTIAL_VOLUME_SIGMA = 0.6  # in-plane blur (voxels) so that edges look scanned, not drawn
VESSEL_HU = (-600.0, 50.0)  # vessel edge, vessel centre
LUNG_GRAVITY_HU = 40.0  # dependent (posterior) lung is denser
LUNG_TEXTURE_HU = 12.0
FIELD_NODES = 48  # in-plane nodes of the smooth random fields that draw vessels
VESSEL_WIDTH = (0.16, 0.22)  # field band drawn as vessel (field std = 1), at mid-distance from the hila


class Tissue(IntEnum):
    """Tissue classes of a phantom (what each voxel was drawn as; AIRWAY is any air inside the body)."""

    AIR, OUT_OF_FIELD, TABLE, FAT, SOFT_TISSUE, LIVER, BLOOD, LUNG, VESSEL, AIRWAY, BONE = range(11)


TISSUE_HU = {Tissue.AIR: -1000, Tissue.OUT_OF_FIELD: -1000, Tissue.TABLE: 150, Tissue.FAT: -100,
             Tissue.SOFT_TISSUE: 40, Tissue.LIVER: 60, Tissue.BLOOD: 40, Tissue.LUNG: -860,
             Tissue.VESSEL: -600, Tissue.AIRWAY: -1000, Tissue.BONE: 700}
_HU_LUT = np.array([TISSUE_HU[t] for t in Tissue], np.float32)


@dataclass(frozen=True)
class SyntheticCase:
    """One phantom. Arrays are (z, y, x); geometry is ITK's (x, y, z) in LPS millimetres.

    Attributes:
        ct: int16 HU.
        mask: uint8 labels {0, 3 left lung, 4 right lung, 5 trachea}.
        tissue: uint8 :class:`Tissue` classes (ground truth for tests and QC).
        spacing: voxel size (x, y, z), mm.
        origin: world position of voxel (0, 0, 0), mm.
        direction: row-major 3x3 direction cosines.
        out_of_field: HU outside the circular field of view, or None.
    """

    ct: np.ndarray
    mask: np.ndarray
    tissue: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    out_of_field: int | None


def _grid_size(rng: np.random.Generator, shape: Sequence[int] | None, full_size: bool) -> tuple[int, int, int, float]:
    """(nx, ny, nz, slice spacing mm) of an explicit ``shape`` (the small patient's grid), validated."""
    if full_size:
        raise InputError("give either shape or full_size=True, not both")
    try:
        nx, ny, nz = (int(n) for n in shape)
    except (TypeError, ValueError) as err:
        raise InputError(f"shape must be three integers (X, Y, Z) in voxels, got {shape!r}") from err
    if min(nx, ny, nz) < MIN_SIZE:
        raise InputError(f"shape (X, Y, Z) must be at least {MIN_SIZE} voxels per axis, got {(nx, ny, nz)}")
    step = SLICE_SPACING_STEP_MM
    return nx, ny, nz, round(rng.uniform(*SLICE_SPACING_MM) / step) * step


@dataclass(frozen=True)
class _TrueScale:
    """The true-scale draws of one phantom (default and full-size grids): grid, body size, coverage, extras."""

    nx: int
    ny: int
    nz: int
    sz: float
    sxy: float
    fill: float  # body width / in-plane field of view
    shift: tuple[float, float]  # the body's centre off the image centre (u, v; units of R)
    length_mm: float  # the whole chest's drawing length (t = 0..1)
    t_range: tuple[float, float]  # the scanned part of it
    z_lung: tuple[float, float]  # lung base and apex in t
    coverage: str
    arms: tuple[float, float, float] | None  # arm radius, gap to the body (mm), vertical offset (share of b)
    out_of_field: int | None
    noise_hu: float
    emphysema: float  # HU subtracted from the parenchyma (0: healthy)
    consolidation: tuple[int, float, float, float, float] | None  # lung index, t, u/v offsets, radius mm
    gas: list  # bowel gas pockets: (t, u offset, v offset, radius mm, half-height in t)
    contrast: float  # HU added to blood (heart, aorta, lung vessels); 0: no contrast agent


def _true_scale(seed: int, full_size: bool) -> _TrueScale:
    """Draw an adult chest's sizes in millimetres and the grid that holds it (its own random stream)."""
    rng = np.random.default_rng([seed, 1])
    U = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
    coverage = str(rng.choice([c for c, _ in COVERAGE], p=[w for _, w in COVERAGE]))
    arms_down = coverage != "cropped" and rng.random() < ARMS_DOWN
    width = U(*BODY_WIDTH_MM)
    # cropped: a field of view narrower than the chest, off centre, cutting through the lungs (as a reconstruction
    # zoomed on the heart); the body (and the lungs in it) runs off the image at the sides
    fill = U(1.15, 1.6) if coverage == "cropped" else U(0.56, 0.64) if arms_down else U(0.70, 0.85)
    shift = (U(-0.15, 0.15), U(-0.1, 0.1)) if coverage == "cropped" else (0.0, 0.0)
    n = FULL_INPLANE if full_size else DEFAULT_INPLANE
    sxy = float(np.clip(width / fill / n, *FULL_INPLANE_SPACING_MM)) if full_size else width / fill / n
    sxy = round(sxy, 4)
    fill = width / (n * sxy)
    z_base, z_apex = U(0.06, 0.16), U(0.83, 0.93)
    length = U(*LUNG_HEIGHT_MM) / (z_apex - z_base)
    t_range = (0.0, 1.0)
    if coverage == "bases":  # an abdomen scan: upper abdomen and the lung bases
        t_range = (U(-0.45, -0.25), z_base + U(0.25, 0.45) * (z_apex - z_base))
    elif coverage == "cropped":  # and head to foot from below the domes to the upper lungs or above
        t_range = (U(-0.1, 0.25), U(0.65, 1.0))
    step = SLICE_SPACING_STEP_MM
    sz = round(U(*(SLICE_SPACING_MM if full_size else DEFAULT_SLICE_SPACING_MM)) / step) * step
    nz = max(MIN_SIZE, round((t_range[1] - t_range[0]) * length / sz))
    out_of_field = None if coverage == "cropped" else TRUE_SCALE_OUT_OF_FIELD[int(rng.integers(4))]
    arms = (U(40.0, 55.0), U(8.0, 30.0), U(-0.15, 0.15)) if arms_down else None
    emphysema = U(50.0, 100.0) if rng.random() < EMPHYSEMA else 0.0
    consolidation = None
    if rng.random() < CONSOLIDATION:
        consolidation = (int(rng.integers(2)), z_base + U(0.1, 0.4) * (z_apex - z_base), U(-0.3, 0.3), U(0.0, 0.4),
                         U(25.0, 50.0))
    gas = [(U(min(t_range[0], z_base - 0.06), z_base - 0.01), U(-0.5, 0.65), U(-0.6, 0.3), U(10.0, 35.0), U(0.02, 0.06))
           for _ in range(int(rng.integers(4, 13)))]
    contrast = U(*CONTRAST_HU) if rng.random() < CONTRAST else 0.0
    return _TrueScale(n, n, int(nz), float(sz), sxy, fill, shift, length, t_range, (z_base, z_apex), coverage, arms,
                      out_of_field, U(*TRUE_SCALE_NOISE_HU), emphysema, consolidation, gas, contrast)


def _spline_weights(n: int, nodes: int) -> np.ndarray:
    """(n, nodes) cubic B-spline matrix from field nodes spread over an axis to n voxel centres (smooth curves)."""
    pos = (np.arange(n) + 0.5) / n * (nodes - 1)
    lo = pos.astype(int)
    f = pos - lo
    taps = ((1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3)
    weights = np.zeros((n, nodes), np.float32)
    for offset, tap in zip(range(-1, 3), taps):
        np.add.at(weights, (np.arange(n), np.clip(lo + offset, 0, nodes - 1)), tap / 6)
    return weights


def _ellipse(u, v, cu, cv, au, av):
    """Squared normalised distance ((u-cu)/au)^2 + ((v-cv)/av)^2 (<= 1 inside)."""
    return ((u - cu) / au) ** 2 + ((v - cv) / av) ** 2


def _profile(t, lo, hi):
    """Ellipsoid height profile: 1 at the middle of [lo, hi], 0 at and beyond its ends."""
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    return np.sqrt(np.clip(1.0 - ((t - mid) / half) ** 2, 0.0, None))


def _segment_distance(px, py, pz, a, b):
    """Distance (mm) from points (px, py, pz) to the 3-D segment a-b."""
    d = np.subtract(b, a)
    s = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1] + (pz - a[2]) * d[2]) / float(d @ d), 0.0, 1.0)
    return np.sqrt((px - a[0] - s * d[0]) ** 2 + (py - a[1] - s * d[1]) ** 2 + (pz - a[2] - s * d[2]) ** 2)


def render_case(seed: int, shape: Sequence[int] | None = None, full_size: bool = False, *,
                flipped: bool | None = None) -> SyntheticCase:
    """Draw one chest-CT phantom.

    Coordinates: u, v are in-plane positions in units of R (half the smaller in-plane field of view),
    u towards the patient's left (LPS +x), v towards the back (LPS +y); t in [0, 1] runs from the
    first (inferior) to the last (superior) slice. Everything is built for an identity direction and
    flipped afterwards when ``flipped``. Slices are drawn one at a time inside the body's bounding box.

    Args:
        seed: any non-negative int; every random choice comes from it.
        shape: (X, Y, Z) voxels of a small patient filling the grid (tests), or None for an adult chest at
            true scale on the default coarse grid (128 x 128 pixels, see the module docstring).
        full_size: the adult chest on LUNA16's grid, 512 x 512 pixels of 0.5-0.98 mm (benchmarks; a few seconds).
        flipped: x/y-flipped direction; None means ``seed % 4 == 3``.

    Raises:
        InputError: bad ``shape``, or both ``shape`` and ``full_size``.
    """
    rng = np.random.default_rng(seed)
    U = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731  (one draw, readable below)
    flipped = seed % FLIP_EVERY == FLIP_EVERY - 1 if flipped is None else flipped
    true = None
    if shape is None:
        true = _true_scale(seed, full_size)
        nx, ny, nz, sz, sxy = true.nx, true.ny, true.nz, true.sz, true.sxy
    else:
        nx, ny, nz, sz = _grid_size(rng, shape, full_size)
        sxy = round(U(*INPLANE_SPACING_MM), 6)
    fov = np.array([nx * sxy, ny * sxy, nz * sz])
    r_mm = min(fov[0], fov[1]) / 2
    u_axis = (((np.arange(nx) + 0.5) * sxy - fov[0] / 2) / r_mm).astype(np.float32)
    v_axis = (((np.arange(ny) + 0.5) * sxy - fov[1] / 2) / r_mm).astype(np.float32)
    length = true.length_mm if true else fov[2]  # the drawing's head-foot length: t = 0..1
    t_lo, t_hi = true.t_range if true else (0.0, 1.0)

    # Body, table, chest wall (z-independent), drawn in the window holding body and table.
    a = true.fill if true else U(0.35, 0.425) * 2  # body half-width (units of R): 70-85 % of a small patient's grid
    b = a * U(0.62, 0.74)
    u0, v0 = U(-0.04, 0.04), U(-0.10, -0.02)
    if true:
        u0, v0 = u0 + true.shift[0], v0 + true.shift[1]
    fat = U(0.04, 0.10) * a
    table_top = v0 + b + U(0.02, 0.05)
    margin = 4 * sxy / r_mm + 0.02
    arm_r, arm_gap, arm_v = (true.arms[0] / r_mm, true.arms[1] / r_mm, v0 + true.arms[2] * b) if true and true.arms \
        else (0.0, 0.0, 0.0)
    reach = a + arm_gap + 2 * arm_r
    xs = np.flatnonzero(np.abs(u_axis - u0) <= reach + margin)
    ys = np.flatnonzero((v_axis >= v0 - b - margin) & (v_axis <= table_top + 0.05 + margin))
    win = (slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))
    u, v = np.broadcast_arrays(u_axis[None, win[1]], v_axis[win[0], None])
    body = _ellipse(u, v, u0, v0, a, b) <= 1
    inner = _ellipse(u, v, u0, v0, a - fat, b - fat) <= 1
    cage_a, cage_b = a - fat - 0.12 * a, b - fat - 0.12 * a
    cage = _ellipse(u, v, u0, v0, cage_a, cage_b)
    rib_ring = (cage > 1) & (cage <= (1 + 0.045 * a / cage_b) ** 2)
    table = (v >= table_top) & (v <= table_top + 0.05) & (np.abs(u - u0) <= 0.9 * a)
    base = np.full(u.shape, Tissue.AIR, np.uint8)
    base[table], base[body], base[inner] = Tissue.TABLE, Tissue.FAT, Tissue.SOFT_TISSUE
    if arm_r:  # arms down beside the chest: skin and fat, muscle, the humerus
        for side in (-1, 1):
            cu = u0 + side * (a + arm_gap + arm_r)
            base[_ellipse(u, v, cu, arm_v, arm_r, 0.9 * arm_r) <= 1] = Tissue.FAT
            base[_ellipse(u, v, cu, arm_v, 0.85 * arm_r, 0.75 * arm_r) <= 1] = Tissue.SOFT_TISSUE
            base[_ellipse(u, v, cu, arm_v, 0.25 * arm_r, 0.25 * arm_r) <= 1] = Tissue.BONE
    if true:
        out_of_field = true.out_of_field
    else:
        out_of_field = OUT_OF_FIELD_CHOICES[int(rng.integers(len(OUT_OF_FIELD_CHOICES)))]
    full_base = np.full((ny, nx), Tissue.AIR, np.uint8)
    outside_fov = np.zeros((ny, nx), bool)
    if out_of_field is not None:
        outside_fov = u_axis[None, :] ** 2 + v_axis[:, None] ** 2 > 1.0
        full_base[outside_fov] = Tissue.OUT_OF_FIELD
    full_base[win] = np.where(outside_fov[win], Tissue.OUT_OF_FIELD, base)
    base = full_base[win]

    # Spine: vertebral body (discs vary with z), canal, arch and spinous process.
    v_sp, r_vb = v0 + U(0.50, 0.58) * b, 0.085 * a
    v_canal, r_canal = v_sp + r_vb + 0.045 * a, 0.04 * a
    vertebra = _ellipse(u, v, u0, v_sp, r_vb, r_vb) <= 1
    canal = _ellipse(u, v, u0, v_canal, r_canal, r_canal) <= 1
    arch = (_ellipse(u, v, u0, v_canal, r_canal + 0.03 * a, r_canal + 0.03 * a) <= 1) & ~canal
    arch |= (np.abs(u - u0) < 0.02 * a) & (v > v_canal) & (v < v0 + b - fat - 0.02 * a)
    spine_zone = _ellipse(u, v, u0, v_sp + 0.05 * a, r_vb + 0.05 * a, r_vb + 0.10 * a) <= 1

    # Lungs (right = patient right = -u, bigger) on domed diaphragms; heights in t.
    z_base, z_apex = true.z_lung if true else (U(0.06, 0.16), U(0.83, 0.93))
    height = z_apex - z_base
    gap, a_left, b_lung, v_lung = U(0.10, 0.14) * a, U(0.34, 0.40) * a, U(0.55, 0.65) * b, v0 + U(0.02, 0.10) * b
    if true:  # an adult's lungs fill more of the chest than a small patient's drawing (2-5 L)
        a_left, b_lung = a_left * TRUE_LUNG_WIDTH, b_lung * TRUE_LUNG_DEPTH
    a_right = a_left * U(1.05, 1.15)
    lungs = []  # (label, ellipse q, lowest t per pixel, hilum u)
    # the left lung leaves room for the heart (cardiac notch): further from the midline
    sides = ((LUNA16_LEFT_LUNG, 1, a_left, gap + 0.04 * a, b_lung),
             (LUNA16_RIGHT_LUNG, -1, a_right, gap, 1.04 * b_lung))
    for label, side, half, medial, depth in sides:
        q = _ellipse(u, v, u0 + side * (medial + half), v_lung, half, depth)
        lift = U(0.02, 0.05) if side < 0 else 0.0  # the right dome sits higher (liver)
        dome = _ellipse(u, v, u0 + side * (medial + 0.6 * half), v_lung, 1.2 * half, b_lung)  # highest medially
        floor = z_base + lift + U(0.15, 0.25) * height * np.clip(1 - dome, 0, 1)
        lungs.append((label, np.where(cage <= 1, q, np.inf), floor, u0 + side * (medial + 0.25 * half)))
    widest = z_base + 0.35 * height

    # Mediastinum: heart with epicardial fat, descending aorta, trachea and main bronchi; abdomen.
    heart = _ellipse(u, v, u0 + U(0.08, 0.16) * a, v0 - U(0.15, 0.25) * b, U(0.30, 0.36) * a, U(0.35, 0.42) * b)
    heart_top = z_base + U(0.45, 0.55) * height
    aorta = _ellipse(u, v, u0 + 0.10 * a, v_sp - 0.20 * b, 0.06 * a, 0.06 * a)
    r_tr, v_tr = U(0.055, 0.07) * a, v_sp - r_vb - U(0.08, 0.12) * a
    trachea_q = _ellipse(u, v, u0, v_tr, r_tr, r_tr)
    t_carina = z_base + U(0.62, 0.70) * height
    t_hilum = t_carina - U(0.06, 0.10) * height
    t_slices = t_lo + (np.arange(nz) + 0.5) / nz * (t_hi - t_lo)
    z_mm = t_slices * length
    carina_mm = np.array([u0 * r_mm, v_tr * r_mm, t_carina * length])
    bronchi = [np.array([hu * r_mm, (v_lung - 0.1 * b) * r_mm, t_hilum * length]) for *_, hu in lungs]
    r_bronchus = 0.7 * r_tr * r_mm
    liver = (cage <= 1) & (u < u0 + 0.25 * a)
    liver_top = np.where(liver, lungs[1][2], -1.0)
    stomach = (u0 + 0.45 * a, v0 - 0.15 * b, z_base - 0.03) if rng.random() < 0.5 else None
    static_exclude = spine_zone | (trachea_q <= 1.6**2)
    # A rib runs down from the spine round to the sternum, so one slice cuts several ribs per side.
    rib_period_mm = U(0.13, 0.17) * r_mm
    rib_drop_mm = U(3.0, 4.0) * rib_period_mm
    rib_angle = np.arctan2(np.abs(u - u0) / a, (v - v0) / b)  # 0 at the back, pi at the front
    ribs_allowed = rib_ring & ~((np.abs(u - u0) < 0.15 * a) & (v < v0))
    sternum = rib_ring & (np.abs(u - u0) < 0.06 * a) & (v < v0)
    disc_period = height * length / 12  # about twelve thoracic vertebrae along the lungs

    # Vessels: where two smooth random fields are both near zero (curves in 3-D), thicker near the hila.
    nodes_z = max(4, round(FIELD_NODES * fov[2] / (2 * r_mm)))
    fields = [ndimage.gaussian_filter(rng.standard_normal((nodes_z, FIELD_NODES, FIELD_NODES)), 1.0, mode="wrap")
              for _ in range(2)]
    fields = [(f / f.std()).astype(np.float32) for f in fields]
    wz = _spline_weights(nz, nodes_z)
    lung_rows, lung_cols = np.nonzero((lungs[0][1] <= 1) | (lungs[1][1] <= 1))
    box = (slice(lung_rows.min(), lung_rows.max() + 1), slice(lung_cols.min(), lung_cols.max() + 1))
    wy = _spline_weights(ny, FIELD_NODES)[win[0]][box[0]]
    wx_t = np.ascontiguousarray(_spline_weights(nx, FIELD_NODES)[win[1]][box[1]].T)
    hilum_dist = np.minimum(*(np.hypot(u - hu, v - v_lung) for *_, hu in lungs)) / (2 * a_left)
    vessel_width = U(*VESSEL_WIDTH) * np.clip(1.4 - hilum_dist, 0.35, 1.4)
    gravity = LUNG_GRAVITY_HU * np.clip((v - v_lung) / (2 * b_lung) + 0.5, 0.0, 1.0)
    noise_hu = U(*NOISE_HU)
    if true:
        noise_hu = true.noise_hu
        gas = [(tc, u0 + du * a, v0 + dv * b, rad / r_mm, half) for tc, du, dv, rad, half in true.gas]
        consolidation = None
        if true.consolidation:
            i, tc, du, dv, rad = true.consolidation
            _, side, half, medial, depth = sides[i]
            consolidation = (tc, u0 + side * (medial + half) + du * half, v_lung + dv * depth, rad / r_mm,
                             rad / length)

    ct = np.empty((nz, ny, nx), np.int16)
    mask = np.zeros((nz, ny, nx), np.uint8)
    tissue = np.empty((nz, ny, nx), np.uint8)
    edge_hu, centre_hu = VESSEL_HU
    for k in range(nz):
        t = t_slices[k]
        tis, lab = base.copy(), mask[k][win]
        if t < z_base + 0.3 * height:  # abdomen: liver under the right dome, gastric bubble under the left
            tis[t < liver_top] = Tissue.LIVER
            if stomach is not None and abs(t - stomach[2]) < 0.05:
                size = np.sqrt(1 - ((t - stomach[2]) / 0.05) ** 2)
                tis[_ellipse(u, v, stomach[0], stomach[1], 0.15 * a * size, 0.12 * b * size) <= 1] = Tissue.AIRWAY
            for tc, gu, gv, rad, half in gas if true else ():  # bowel gas
                if abs(t - tc) < half:
                    size = np.sqrt(1 - ((t - tc) / half) ** 2)
                    pocket = (_ellipse(u, v, gu, gv, rad * size, 0.8 * rad * size) <= 1) & (base == Tissue.SOFT_TISSUE)
                    tis[pocket & ~spine_zone & (t >= liver_top)] = Tissue.AIRWAY
        exclude = static_exclude
        if z_base < t < z_apex:
            tis[aorta <= 1] = Tissue.BLOOD
            exclude = exclude | (aorta <= 1.5**2)
        h = _profile(t, z_base - 0.05 * height, heart_top)
        if h > 0:
            tis[(heart > h**2) & (heart <= (1.1 * h) ** 2)] = Tissue.FAT
            tis[heart <= h**2] = Tissue.BLOOD
            exclude = exclude | (heart <= (1.1 * h) ** 2)
        size = 1.0 if t <= widest else _profile(t, 2 * widest - z_apex, z_apex)
        for label, q, floor, _ in lungs:
            lung = (q <= size**2) & (t >= floor) & ~exclude
            tis[lung], lab[lung] = Tissue.LUNG, label
        lung_all = lab > 0
        if lung_all.any():
            # einsum, not BLAS matmul: single-threaded (OpenBLAS threads crawl on busy cores) and bit-reproducible
            field = [np.full(u.shape, np.inf, np.float32) for _ in fields]
            for out, f in zip(field, fields):
                out[box] = np.einsum("yj,jx->yx", np.einsum("yj,jk->yk", wy, np.einsum("z,zjk->jk", wz[k], f)), wx_t)
            vessel_m = np.maximum(np.abs(field[0]), np.abs(field[1]))
            vessels = lung_all & (vessel_m < vessel_width)
            tis[vessels] = Tissue.VESSEL
        airway = trachea_q <= 1 if t >= t_carina else np.zeros(u.shape, bool)
        lab[airway] = LUNA16_TRACHEA
        if t_hilum - 0.05 < t < t_carina + 0.05:
            for end in bronchi:
                tube = _segment_distance(u * r_mm, v * r_mm, z_mm[k], carina_mm, end) <= r_bronchus
                lab[tube & ~lung_all] = LUNA16_TRACHEA
                airway |= tube
        tis[airway] = Tissue.AIRWAY
        bone = arch | (vertebra if (z_mm[k] % disc_period) >= 0.2 * disc_period else False)
        if z_base - 0.05 < t < z_apex + 0.02:
            phase = 2 * np.pi * (z_mm[k] + rib_drop_mm * rib_angle / np.pi) / rib_period_mm
            bone = bone | (ribs_allowed & (np.sin(phase) > 0.45)) | sternum
        tis[bone], lab[bone] = Tissue.BONE, 0
        hu = np.take(_HU_LUT, tis)
        if true and true.contrast:  # contrast agent in the blood: heart, aorta
            hu[tis == Tissue.BLOOD] += true.contrast
        if lung_all.any():  # what is still lung or vessel after airways and bones were drawn over it
            vessels, parenchyma = tis == Tissue.VESSEL, tis == Tissue.LUNG
            hu[parenchyma] += gravity[parenchyma] + LUNG_TEXTURE_HU * field[0][parenchyma]
            if true and true.emphysema:  # darker parenchyma with bullae where the second field is high
                hu[parenchyma] -= true.emphysema
                hu[parenchyma & (field[1] > 1.3)] = -990.0
            if true and consolidation and abs(t - consolidation[0]) < consolidation[4]:
                tc, cu, cv, rad, half = consolidation
                size = np.sqrt(1 - ((t - tc) / half) ** 2)
                solid = (parenchyma | vessels) & (_ellipse(u, v, cu, cv, rad * size, rad * size) <= 1)
                hu[solid] = TISSUE_HU[Tissue.SOFT_TISSUE] - 20.0  # airless lung: still lung
            centre = centre_hu + (true.contrast if true else 0.0)  # and the lung vessels
            hu[vessels] = centre + (edge_hu - centre) * (vessel_m[vessels] / vessel_width[vessels])
        full = np.full((ny, nx), TISSUE_HU[Tissue.AIR], np.float32)
        full[win] = ndimage.gaussian_filter(hu, PARTIAL_VOLUME_SIGMA, truncate=2.0, mode="nearest")
        full += rng.standard_normal((ny, nx), dtype=np.float32) * noise_hu
        np.clip(np.rint(full), *HU_RANGE, out=full)
        ct[k] = full
        if out_of_field is not None:
            ct[k][outside_fov] = out_of_field
        tissue[k] = full_base
        tissue[k][win] = tis

    origin = [round(-fov[0] / 2 + U(-0.05, 0.05) * fov[0], 2), round(-fov[1] / 2 + U(-0.05, 0.05) * fov[1], 2),
              round(U(-380.0, -80.0), 2)]
    direction = IDENTITY
    if flipped:  # same world anatomy: reverse x and y, move the origin to the former last voxel
        ct, mask, tissue = (arr[:, ::-1, ::-1].copy() for arr in (ct, mask, tissue))
        origin = [round(origin[0] + (nx - 1) * sxy, 6), round(origin[1] + (ny - 1) * sxy, 6), origin[2]]
        direction = FLIPPED_XY
    return SyntheticCase(ct, mask, tissue, (sxy, sxy, sz), tuple(float(o) for o in origin), direction, out_of_field)


def generate_case(seed: int, shape: Sequence[int] | None = None, full_size: bool = False, *,
                  flipped: bool | None = None) -> tuple:
    """One phantom as arrays and geometry (see :func:`render_case`).

    Returns:
        (ct int16 (z, y, x) HU, mask uint8 (z, y, x), spacing (x, y, z) mm, origin (x, y, z) mm, direction 9-tuple).
    """
    case = render_case(seed, shape, full_size, flipped=flipped)
    return case.ct, case.mask, case.spacing, case.origin, case.direction


def case_uid(seed: int, index: int) -> str:
    """LUNA16-like series uid, a pure function of (seed, index)."""
    digits = str(int(hashlib.sha256(f"synthetic:{seed}:{index}".encode()).hexdigest(), 16))
    return UID_PREFIX + digits[:UID_DIGITS]


def _write_mhd(array: np.ndarray, spacing, origin, direction, target: Path) -> None:
    """Write ``target`` (.mhd) + its .zraw atomically: temp folder beside it, then data file, then header."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(d) for d in direction])
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.stem}.", dir=target.parent))
    try:
        sitk.WriteImage(image, str(tmp_dir / target.name), useCompression=True)
        data_name = target.with_suffix(".zraw").name
        os.replace(tmp_dir / data_name, target.parent / data_name)
        os.replace(tmp_dir / target.name, target)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def write_case(out: str | os.PathLike, uid: str, ct: np.ndarray, mask: np.ndarray, spacing: Sequence[float],
               origin: Sequence[float], direction: Sequence[float]) -> tuple[Path, Path]:
    """Write one case in the reference layout (``OUT/lung_ct_image/<uid>.mhd`` and ``OUT/seg-lungs-LUNA16/<uid>.mhd``).

    Args:
        out: dataset root (created if missing).
        uid: series uid (file stem).
        ct: int16 (z, y, x) HU. mask: uint8 (z, y, x), same shape.
        spacing, origin: (x, y, z) mm. direction: row-major 3x3.

    Returns:
        (CT path, mask path).

    Raises:
        InputError: CT and mask shapes differ.
    """
    if ct.shape != mask.shape:
        raise InputError(f"ct shape {ct.shape} and mask shape {mask.shape} of case {uid!r} must be equal")
    paths = []
    for folder, array in ((IMAGE_DIR, ct.astype(np.int16, copy=False)), (MASK_DIR, mask.astype(np.uint8, copy=False))):
        target = Path(out) / folder / f"{uid}.mhd"
        target.parent.mkdir(parents=True, exist_ok=True)
        _write_mhd(array, spacing, origin, direction, target)
        paths.append(target)
    return paths[0], paths[1]


def _case_seed(seed: int, index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"case:{seed}:{index}".encode()).digest()[:8], "big")


def _make(out: str, seed: int, index: int, shape, full_size: bool) -> str:
    uid = case_uid(seed, index)
    flipped = index % FLIP_EVERY == FLIP_EVERY - 1
    write_case(out, uid, *generate_case(_case_seed(seed, index), shape, full_size, flipped=flipped))
    return uid


def generate_dataset(out: str | os.PathLike, cases: int = 8, seed: int = 0, shape: Sequence[int] | None = None,
                     full_size: bool = False, workers: int = 1) -> list[str]:
    """Write ``cases`` phantoms under ``out`` in the reference layout; the same arguments give the same bytes.

    Args:
        out: dataset root (created if missing).
        cases: number of cases (>= 1).
        seed: dataset seed; case i uses a seed derived from (seed, i); cases with i % 4 == 3 are flipped.
        shape: (X, Y, Z) voxels for every case, or None (default small grid, slices drawn per case).
        full_size: 512 x 512 x (200..350) cases.
        workers: processes writing cases in parallel (results do not depend on it).

    Returns:
        The series uids, in case order.

    Raises:
        InputError: bad ``cases``, ``workers``, ``shape``.
    """
    if int(cases) < 1:
        raise InputError(f"cases must be >= 1, got {cases!r}")
    if int(workers) < 1:
        raise InputError(f"workers must be >= 1, got {workers!r}")
    if shape is not None:
        _grid_size(np.random.default_rng(0), shape, full_size)  # validate before writing anything
    Path(out).mkdir(parents=True, exist_ok=True)
    jobs = [(str(out), seed, i, shape, full_size) for i in range(int(cases))]
    if workers == 1:
        return [_make(*job) for job in jobs]
    with ProcessPoolExecutor(max_workers=int(workers)) as pool:
        return list(pool.map(_make, *zip(*jobs)))
