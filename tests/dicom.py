"""Writing DICOM series for tests (SimpleITK's documented recipe, one file per slice)."""

from __future__ import annotations

import locale
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

__all__ = ["write_dicom_series"]

STUDY_UID = "1.2.826.0.1.3680043.2.1125.1"


def write_dicom_series(image: sitk.Image, folder: Path, series_uid: str = STUDY_UID + ".1") -> Path:
    """Write a 3-D image as a DICOM CT series in ``folder`` (created); returns the folder.

    GDCM's writer switches the whole process to the C locale (text then decodes as ASCII, e.g. subprocess output
    read later by the same test process); the locale is restored afterwards.
    """
    folder.mkdir(parents=True, exist_ok=True)
    d = np.asarray(image.GetDirection()).reshape(3, 3)
    common = {
        "0008|0021": time.strftime("%Y%m%d"),
        "0008|0031": time.strftime("%H%M%S"),
        "0008|0060": "CT",
        "0020|000d": STUDY_UID,
        "0020|000e": series_uid,
        "0020|0037": "\\".join(f"{v:.6f}" for v in (*d[:, 0], *d[:, 1])),
        "0018|0050": str(image.GetSpacing()[2]),
    }
    previous = locale.setlocale(locale.LC_ALL)
    try:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for z in range(image.GetDepth()):
            slice_ = image[:, :, z]
            for tag, value in common.items():
                slice_.SetMetaData(tag, value)
            position = image.TransformIndexToPhysicalPoint((0, 0, z))
            slice_.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in position))
            slice_.SetMetaData("0020|0013", str(z + 1))
            writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
            writer.Execute(slice_)
    finally:
        locale.setlocale(locale.LC_ALL, previous)
    return folder
