"""A threshold-based lung reference mask for a real CT that has none (for benchmarks/real_ct.py).

How the mask is made, every step on the CT's own voxels:

1. Smooth the HU with a Gaussian of 1 voxel (noise) and threshold at -400 HU (lung parenchyma is -950..-700,
   the chest wall and mediastinum above -200): candidate air.
2. The body: the segment tool's own body mask (:func:`pipeline.inference.guards.body_mask`: tissue > -500 HU, its
   largest component, each axial slice filled, closed along edges where the field of view cuts the body).
   Candidate air outside it (around the patient, under the table) goes.
3. Air components: each 3-D connected component of what is left with at least ``--min-ml`` (default 50 mL) is kept
   if at least half of its axial slices show it away from the abdomen, i.e. it is not bowel or stomach gas: a
   component whose volume lies mostly below the lowest slice in which any component holds 40 % or more of its
   slice's air is gas under the diaphragm. In practice: the lungs (and the airways joined to them) stay, gas
   pockets go.
4. The trachea and main bronchi: grown from the air darker than -950 HU in the slice nearest the top that shows a
   round airway in the middle third of the image, through voxels darker than -900 HU, stopping where a slice's airway
   spreads to more than 6 times the trachea's area (the carina's level); removed with a 2-voxel rim (the lumen's partial-volume edge), then components under ``--min-ml`` again
   (LUNA16 labels the airways apart from the lungs).
5. Vessels and airway walls inside each lung: holes filled slice by slice (the lung's own outline, so the heart
   between the lungs is not a hole), then a closing of 2 voxels.

Prints the lung volume on each side of the midline of the kept air. The result is a careful threshold mask, not an
expert's contour: vessels at the hila and lung cut by the crop are where it is least certain.

    python benchmarks/lung_reference.py CT.nii.gz REF_MASK.nii.gz
    python benchmarks/lung_reference.py dicom_folder/ refs/dicom_folder.nii.gz --min-ml 5   # a few slices
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

__all__ = ["lung_reference"]

LUNG_HU = -400.0
AIRWAY_SEED_HU = -950.0
AIRWAY_GROW_HU = -900.0


def lung_reference(hu, spacing_zyx, min_ml: float = 50.0):
    """Boolean lung mask (z, y, x) of a CT in HU (see the module docstring)."""
    import numpy as np
    from scipy import ndimage

    from pipeline.inference.guards import body_mask

    smooth = ndimage.gaussian_filter(hu.astype(np.float32), 1.0)
    air = (smooth < LUNG_HU) & body_mask(hu.astype(np.float32), axial_axis=0)
    labels, n = ndimage.label(air)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    sizes = ndimage.sum_labels(air, labels, range(1, n + 1)) * voxel_ml
    big = [i + 1 for i, s in enumerate(sizes) if s >= min_ml]
    # the lowest slice where one component holds a large share of the slice's air: the lungs' bases
    per_slice_air = air.sum(axis=(1, 2)).astype(float)
    lung_slices = np.zeros(hu.shape[0], bool)
    for i in big:
        share = (labels == i).sum(axis=(1, 2)) / np.maximum(per_slice_air, 1)
        lung_slices |= (share >= 0.4) & ((labels == i).sum(axis=(1, 2)) * voxel_ml > 1.0)
    lowest = int(np.flatnonzero(lung_slices).min()) if lung_slices.any() else 0
    keep = np.zeros_like(air)
    for i in big:
        component = labels == i
        zs = np.flatnonzero(component.any(axis=(1, 2)))
        if (zs >= lowest).mean() >= 0.5:
            keep |= component
    keep &= ~ndimage.binary_dilation(_airways(smooth, keep), iterations=2)  # the lumen and its darkest rim
    labels, n = ndimage.label(keep)
    sizes = ndimage.sum_labels(keep, labels, range(1, n + 1)) * voxel_ml
    keep = np.isin(labels, [i + 1 for i, s in enumerate(sizes) if s >= min_ml])
    lung = np.zeros_like(keep)
    for k in range(hu.shape[0]):
        parts, m = ndimage.label(keep[k])
        for j in range(1, m + 1):
            lung[k] |= ndimage.binary_fill_holes(parts == j)
    return ndimage.binary_closing(lung, ndimage.generate_binary_structure(3, 1), iterations=2) | lung


def _airways(smooth, air):
    """The trachea and main bronchi: grown down from the top slice's central dark airway (empty when none)."""
    import numpy as np
    from scipy import ndimage

    nz, ny, nx = smooth.shape
    centre = np.zeros((ny, nx), bool)
    centre[ny // 3: 2 * ny // 3, nx // 3: 2 * nx // 3] = True
    for k in range(nz - 1, -1, -1):
        parts, m = ndimage.label((smooth[k] < AIRWAY_SEED_HU) & centre)
        if m and 0 < ndimage.sum_labels(np.ones_like(parts), parts, range(1, m + 1)).max() < 0.02 * ny * nx:
            seed = np.zeros_like(air)
            seed[k] = parts == (1 + int(np.argmax(ndimage.sum_labels(np.ones_like(parts), parts, range(1, m + 1)))))
            break
    else:
        return np.zeros_like(air)
    grown = seed.copy()
    dark = (smooth < AIRWAY_GROW_HU) & air
    width = seed[k].sum()
    for z in range(k, -1, -1):  # slice by slice downwards: stop where the airway spreads into the lung
        prev = grown[z + 1] if z < k else seed[k]
        here = ndimage.binary_propagation(ndimage.binary_dilation(prev, iterations=2) & dark[z], mask=dark[z])
        if here.sum() > 6 * max(width, 1) or not here.any():
            break
        grown[z] = here
    return grown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ct", type=Path, help="CT file (NIfTI, MetaImage, NRRD) or DICOM series folder, in HU")
    parser.add_argument("out", type=Path, help="mask file to write (same geometry; 1 = lung)")
    parser.add_argument("--min-ml", type=float, default=50.0, help="smallest air component kept (mL, default 50)")
    args = parser.parse_args(argv)
    if not args.ct.exists():
        parser.error(f"{args.ct}: no such file or folder")
    import numpy as np
    import SimpleITK as sitk

    from transforms import SimpleITKReader
    from transforms.errors import InputError
    from transforms.io import write_sitk

    try:
        image = SimpleITKReader().read(str(args.ct))
    except InputError as e:
        parser.error(str(e))
    hu = sitk.GetArrayFromImage(image)
    lung = lung_reference(hu, image.GetSpacing()[::-1], args.min_ml)
    out = sitk.GetImageFromArray(lung.astype(np.uint8))
    out.CopyInformation(image)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_sitk(out, args.out)  # atomic: no half-written mask if interrupted
    except InputError as e:
        parser.error(str(e))
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    cols = np.flatnonzero(lung.any(axis=(0, 1)))
    mid = (cols.min() + cols.max()) / 2 if cols.size else 0
    low, high = lung[..., : int(mid)].sum() * voxel_ml, lung[..., int(mid):].sum() * voxel_ml
    print(f"{args.out}: lung {lung.sum() * voxel_ml:.0f} mL (columns below the midline {low:.0f} mL, above {high:.0f} mL)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
