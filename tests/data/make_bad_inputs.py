"""Generate the bad-input corpus: LUNA16-layout cases that are broken in one way each.

Usage: ``python tests/data/make_bad_inputs.py OUT [--good N]`` writes ``OUT/lung_ct_image/<uid>.mhd`` and
``OUT/seg-lungs-LUNA16/<uid>.mhd`` for every entry of :data:`CORPUS` (uid = ``1.0.bad.<name>``) plus N good
synthetic cases, so every entry point can be run over the same folder. Nothing here is hand-edited: the
files are made by SimpleITK and then damaged by code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

IMAGES, MASKS = "lung_ct_image", "seg-lungs-LUNA16"
SHAPE = (24, 48, 48)  # (z, y, x)

#: name -> what is wrong (the words an error or warning about it should contain)
CORPUS = {
    "truncated_raw": "data file shorter than its header says",
    "wrong_header_size": "header DimSize larger than the data",
    "mismatched_mask": "mask size differs from the CT",
    "nan_volume": "NaN voxels",
    "image_2d": "a 2-D image",
    "image_4d": "a 4-D image",
    "huge_spacing": "spacing of 500 mm",
    "empty_mask": "a mask without lung",
}


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    ct = np.full(SHAPE, -1000, np.int16)
    ct[:, 8:40, 6:42] = 40
    mask = np.zeros(SHAPE, np.uint8)
    ct[4:20, 14:34, 10:22] = -850
    mask[4:20, 14:34, 10:22] = 3
    ct[4:20, 14:34, 26:38] = -850
    mask[4:20, 14:34, 26:38] = 4
    return ct, mask


def _write(array: np.ndarray, path: Path, spacing=(0.8, 0.8, 2.0), compress: bool = False) -> None:
    img = sitk.GetImageFromArray(array, isVector=False)
    img.SetSpacing(tuple(spacing[: img.GetDimension()]) + (1.0,) * max(0, img.GetDimension() - len(spacing)))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), compress)


def make_case(out: Path, name: str) -> str:
    """Write one broken case; returns its uid."""
    uid = f"1.0.bad.{name}"
    img, msk = out / IMAGES / f"{uid}.mhd", out / MASKS / f"{uid}.mhd"
    ct, mask = _phantom()
    if name == "truncated_raw":
        _write(ct, img)
        raw = img.with_suffix(".raw")
        raw.write_bytes(raw.read_bytes()[: raw.stat().st_size // 3])
        _write(mask, msk, compress=True)
    elif name == "wrong_header_size":
        _write(ct, img)
        img.write_text(img.read_text().replace(f"DimSize = {SHAPE[2]} {SHAPE[1]} {SHAPE[0]}",
                                               f"DimSize = {SHAPE[2]} {SHAPE[1]} {SHAPE[0] * 4}"))
        _write(mask, msk, compress=True)
    elif name == "mismatched_mask":
        _write(ct, img)
        _write(mask[:, :, :40], msk, compress=True)
    elif name == "nan_volume":
        f = ct.astype(np.float32)
        f[10:14] = np.nan
        _write(f, img)
        _write(mask, msk, compress=True)
    elif name == "image_2d":
        _write(ct[12], img)
        _write(mask[12], msk, compress=True)
    elif name == "image_4d":
        _write(np.stack([ct, ct]), img, spacing=(0.8, 0.8, 2.0, 1.0))
        _write(np.stack([mask, mask]), msk, spacing=(0.8, 0.8, 2.0, 1.0), compress=True)
    elif name == "huge_spacing":
        _write(ct, img, spacing=(0.8, 0.8, 500.0))
        _write(mask, msk, spacing=(0.8, 0.8, 500.0), compress=True)
    elif name == "empty_mask":
        _write(ct, img)
        _write(np.zeros_like(mask), msk, compress=True)
    else:
        raise KeyError(name)
    return uid


def make_corpus(out: str | Path, good: int = 0, seed: int = 0) -> dict[str, str]:
    """Write every corpus entry (and ``good`` good synthetic cases). Returns uid -> description."""
    out = Path(out)
    made = {make_case(out, name): text for name, text in CORPUS.items()}
    if good:
        from pipeline.data.synthetic import case_uid, generate_case, write_case

        for i in range(good):
            ct, mask, spacing, origin, direction = generate_case(seed + i, shape=(64, 64, 40))
            write_case(out, case_uid(seed, i), ct, mask, spacing, origin, direction)
    return made


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--good", type=int, default=0, help="good synthetic cases to add")
    a = ap.parse_args()
    for uid, text in make_corpus(a.out, a.good).items():
        print(f"{uid}: {text}")
