"""The reference's ``normalize_dataset.py`` written out again, independently of the project's code, for tests.

Per volume, as docs/reference.md describes it: SimpleITK's (z, y, x) array (direction ignored), zoom factor
round(size x spacing / vox_spacing) / size, ``scipy.ndimage.zoom`` (default order 3, ``mode="nearest"``), int16,
then torchbiomed's ``copy_normalized`` / ``copy_slice_centered`` loops, and for masks < 1 -> 0, > 0 -> 1.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

__all__ = ["copy_normalized", "normalize_file"]


def copy_normalized(src: np.ndarray, shape_max: tuple[int, int, int]) -> np.ndarray:
    """The reference's centred crop/pad of a (z, y, x) volume with square slices, loops and all."""
    zmax, ymax, xmax = shape_max
    if src.shape == shape_max:
        return src
    z_axis, _, dim = src.shape
    new = np.full(shape_max, np.min(src), dtype=np.int16)

    def copy_slice(dst: np.ndarray, s: np.ndarray) -> None:
        if dim <= ymax:
            x0, y0 = int((xmax - dim) / 2), int((ymax - dim) / 2)
            for y in range(dim):
                for x in range(dim):
                    dst[y0 + y][x0 + x] = s[y][x]
        elif dim <= xmax:
            x0, y0 = int((xmax - dim) / 2), int((dim - ymax) / 2)
            for y in range(ymax):
                for x in range(dim):
                    dst[y][x0 + x] = s[y0 + y][x]
        else:
            x0, y0 = int((dim - xmax) / 2), int((dim - ymax) / 2)
            for y in range(ymax):
                for x in range(xmax):
                    dst[y][x] = s[y0 + y][x0 + x]

    if z_axis < zmax:
        start = int((zmax - z_axis) / 2)
        for i in range(z_axis):
            copy_slice(new[start + i], src[i])
    else:
        start = int((z_axis - zmax) / 2)
        for i in range(zmax):
            copy_slice(new[i], src[start + i])
    return new


def normalize_file(path: str, vox_spacing: float, shape_max: tuple[int, int, int], mask: bool) -> np.ndarray:
    """One file through the reference's resample + crop/pad (+ mask threshold): the (z, y, x) int16 array."""
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    spacing_zyx = np.asarray(image.GetSpacing()[::-1], float)
    new_shape = np.round(np.asarray(array.shape) * spacing_zyx / vox_spacing)
    resampled = ndimage.zoom(array, new_shape / np.asarray(array.shape), mode="nearest").astype(np.int16)
    out = copy_normalized(resampled, shape_max)
    if mask:
        out[out < 1] = 0
        out[out > 0] = 1
    return out
