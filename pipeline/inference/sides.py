"""Left and right lung from the network's lung mask, by world position, and the per-lung cleanup.

The network says lung vs background; :func:`assign_sides` decides which lung is which from world coordinates
(``transforms.geometry``: the lung further to the patient's right has the larger RAS x), so flipped or permuted
headers give the same answer as standard ones. :func:`postprocess_sides` keeps the largest component of each lung
and fills its enclosed holes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from transforms.functional import LEFT_LUNG, RIGHT_LUNG
from transforms.geometry import world_x

__all__ = ["MAX_SPLIT_DEPTH_MM", "SECOND_LUNG_MIN_FRACTION", "assign_sides", "postprocess_sides"]

SECOND_LUNG_MIN_FRACTION = 0.05  # a second component smaller than this fraction of the first is debris, not a lung
MAX_SPLIT_DEPTH_MM = 7.5  # erosion depth tried to separate touching lungs (3 erosions on the 2.5 mm grid)
MAX_STRADDLE = 0.25  # a lung has at most this share of its voxels across the midline from its own side
FULL_CONNECTIVITY = ndimage.generate_binary_structure(3, 3)  # 26-neighbourhood, MONAI's default connectivity


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label array, voxel count per label 1..n) of 26-connected components."""
    labels, n = ndimage.label(mask, FULL_CONNECTIVITY)
    return labels, np.bincount(labels.ravel(), minlength=n + 1)[1:]


def _erosions(spacing: np.ndarray) -> int:
    """Erosions (one voxel each) that reach :data:`MAX_SPLIT_DEPTH_MM` on a grid of this spacing (mm), at least 1."""
    return max(1, round(MAX_SPLIT_DEPTH_MM / float(np.min(spacing))))


def _two_lungs(lung: np.ndarray, max_erosions: int, x_world: np.ndarray,
               midline: float | None) -> tuple[np.ndarray | None, str]:
    """Markers 1 and 2 for the two lungs (components, after up to ``max_erosions`` erosions), or None.

    With a ``midline`` (world x of the body's mid-sagittal plane), a pair is accepted only when the larger part
    does not straddle it: two lungs joined at the front with a piece of one broken off are not yet separated."""
    current = lung
    for erosions in range(max_erosions + 1):
        if erosions:
            current = ndimage.binary_erosion(current)
        labels, sizes = _components(current)
        if sizes.size == 0:
            break
        order = np.argsort(sizes)[::-1]
        if sizes.size >= 2 and sizes[order[1]] >= SECOND_LUNG_MIN_FRACTION * sizes[order[0]]:
            largest = labels == order[0] + 1
            right_share = float(np.mean(np.broadcast_to(x_world, lung.shape)[largest] > (midline or 0.0)))
            if midline is not None and min(right_share, 1.0 - right_share) > MAX_STRADDLE:
                continue
            markers = largest.astype(np.uint8) + 2 * (labels == order[1] + 1).astype(np.uint8)
            return markers, ("components" if erosions == 0 else f"split by {erosions} erosion(s)")
    return None, "mid-sagittal plane"


def assign_sides(lung: np.ndarray, affine: np.ndarray, midline: float | None = None) -> tuple[np.ndarray, str]:
    """Label lung voxels 1 = right lung, 2 = left lung by world position.

    The network predicts lung vs background; sides are decided here, on the network's grid:

    1. The two largest 26-connected components are the two lungs (the second must hold at least 5 % of the
       first's voxels; smaller ones are debris).
    2. If the lungs touch (one component, e.g. joined through the trachea or at the anterior junction), the mask
       is eroded up to :data:`MAX_SPLIT_DEPTH_MM` deep (3 erosions on a 2.5 mm grid) until it falls apart into two
       such components; every lung voxel then joins the nearer (in mm) of the two eroded lungs. Given the body's
       ``midline``, a pair (steps 1 and 2) counts only if the larger lies on one side of it (at most
       :data:`MAX_STRADDLE` across): two lungs joined at the front, with a piece of one apart, are still one.
    3. If they still touch, the lung is cut by the mid-sagittal plane through the lung centroid: voxels whose
       world x is larger than the centroid's are right, the others left (a rough split: the returned ``how`` says
       so and the QC picture shows it).
    4. Sides by world position: RAS x points to the patient's right (ITK/LPS x to the left), so the lung whose
       centroid has the larger RAS x is the **right** lung. The affine carries the direction matrix, so flipped
       or permuted headers give the same answer as standard ones.

    Args:
        lung: (X, Y, Z) boolean lung mask.
        affine: its 4x4 RAS affine (voxel index -> world mm; +x = patient's right).
        midline: RAS world x of the body's mid-sagittal plane (e.g. the body mask's centroid), or None.

    Returns:
        (uint8 (X, Y, Z) labels, how the lungs were separated: ``"components"``, ``"split by N erosion(s)"``,
        ``"mid-sagittal plane"`` or ``"empty"``).
    """
    lung = np.asarray(lung, dtype=bool)
    out = np.zeros(lung.shape, np.uint8)
    if not lung.any():
        return out, "empty"
    box = ndimage.find_objects(lung.astype(np.uint8))[0]
    offset = np.array([s.start for s in box], dtype=np.float64)
    sub = lung[box]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    axes = [np.arange(n) + o for n, o in zip(sub.shape, offset, strict=True)]
    x_world = world_x(affine, np.meshgrid(*axes, indexing="ij", sparse=True))
    markers, how = _two_lungs(sub, _erosions(spacing), x_world, midline)
    if markers is None:  # one blob: cut at the plane x_world = x of the lung centroid
        centre = np.asarray(ndimage.center_of_mass(sub)) + offset
        sides = np.where(x_world > world_x(affine, centre), RIGHT_LUNG, LEFT_LUNG)
        out[box] = np.where(sub, sides, 0).astype(np.uint8)
        return out, how
    centres = np.asarray(ndimage.center_of_mass(markers, markers, [1, 2])) + offset
    x1, x2 = (world_x(affine, c) for c in centres)
    side_of_marker = np.array([0, RIGHT_LUNG, LEFT_LUNG] if x1 > x2 else [0, LEFT_LUNG, RIGHT_LUNG], np.uint8)
    nearest = markers
    if np.any(sub & (markers == 0)):  # voxels outside the markers join the nearest marker (in mm)
        index = ndimage.distance_transform_edt(markers == 0, sampling=spacing, return_distances=False,
                                               return_indices=True)
        nearest = markers[tuple(index)]
    out[box] = np.where(sub, side_of_marker[nearest], 0)
    return out, how


def postprocess_sides(labels: np.ndarray) -> np.ndarray:
    """Per lung label: keep the largest 26-connected component, fill enclosed holes (in place; returned).

    What MONAI's ``KeepLargestConnectedComponent(applied_labels=[1, 2], independent=True)`` then
    ``FillHoles(applied_labels=[1, 2])`` do (full connectivity; holes touching the border stay open), computed
    with scipy.ndimage inside each lung's bounding box instead: MONAI's KeepLargestConnectedComponent needs
    scikit-image (not a dependency here), and its FillHoles grows the background by iterated dilation over the
    whole volume, ~10x slower (0.38 s vs 0.04 s for two lungs on a 144 x 144 x 150 grid).
    """
    for side in (RIGHT_LUNG, LEFT_LUNG):
        found = ndimage.find_objects((labels == side).astype(np.uint8))
        if not found or found[0] is None:
            continue
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in found[0])  # 1-voxel margin: outside connects
        sub = labels[box]
        comps, sizes = _components(sub == side)
        keep = comps == int(np.argmax(sizes)) + 1
        sub[(sub == side) & ~keep] = 0
        background, _ = ndimage.label(~keep, FULL_CONNECTIVITY)
        faces = [background.take(i, axis=a) for a in range(3) for i in (0, -1)]
        outside = np.unique(np.concatenate([f.ravel() for f in faces]))
        holes = (background > 0) & ~np.isin(background, outside)
        sub[holes & (sub == 0)] = side
    return labels
