"""Datasets for training: cached whole-volume preprocessing, one training sample per octant.

The reference trains on (uid, octant) pairs: each preprocessed volume is cut into 2x2x2 octants and
octants without lung are dropped, so a batch of 4 holds 4 octants from any volumes. MONAI caches
per volume (``CacheDataset`` / ``PersistentDataset``) and flattens list-returning transforms only
inside a batch (``list_data_collate``), which would tie the batch to whole volumes; it has no dataset
that exposes each element of a cached list as its own index, so :class:`FlattenedDataset` does that
on top of MONAI's caches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, Transform

from pipeline.errors import cause_message
from transforms.errors import InputError

__all__ = ["CACHE_CHOICES", "FlattenedDataset", "LOAD_ERROR_KEY", "SkipBadCase", "volume_dataset"]

logger = logging.getLogger(__name__)

CACHE_CHOICES = ("memory", "disk", "none")
#: key of the marker that :class:`SkipBadCase` returns instead of a case that failed to load
LOAD_ERROR_KEY = "load_error"


class SkipBadCase(Transform):
    """Run a (deterministic) transform; if it fails for a case, return ``{"load_error": message, "uid": ...}``.

    MONAI's datasets stop at the first case that raises; over 888 scans one broken file must not end a
    200-epoch run. The marker is cached like any result, so the case is reported once and excluded by
    :class:`FlattenedDataset`.
    """

    def __init__(self, transform: Callable) -> None:
        self.transform = transform

    def __call__(self, data: Any) -> Any:
        try:
            return self.transform(data)
        except Exception as e:  # noqa: BLE001 - any failure of one case is reported and that case excluded
            message = cause_message(e)
            uid = data.get("uid", data.get("image")) if isinstance(data, dict) else None
            return {LOAD_ERROR_KEY: message, "uid": str(uid)}


def volume_dataset(
    data: Sequence[dict],
    transform: Callable | None,
    cache: str = "memory",
    cache_rate: float = 1.0,
    cache_dir: str | Path | None = None,
    num_workers: int | None = 1,
) -> Dataset:
    """A MONAI dataset over whole volumes whose deterministic ``transform`` output is cached.

    Args:
        data: datalist items ``{"image": path, "label": path, "uid": str}``.
        transform: the deterministic preprocessing (load, resample, crop/pad ...).
        cache: ``"memory"`` (``CacheDataset``, ``cache_rate`` of the items), ``"disk"``
            (``PersistentDataset`` under ``cache_dir``) or ``"none"``.
        cache_rate: fraction of items cached in memory.
        cache_dir: folder for the disk cache (required for ``"disk"``).
        num_workers: threads used to build the memory cache.

    Raises:
        ValueError: unknown ``cache`` or a disk cache without ``cache_dir``.
    """
    if cache not in CACHE_CHOICES:
        raise ValueError(f"cache must be one of {CACHE_CHOICES}, got {cache!r}")
    if cache == "memory":
        return CacheDataset(data=list(data), transform=transform, cache_rate=cache_rate, num_workers=num_workers,
                            progress=False, copy_cache=False)
    if cache == "disk":
        if not cache_dir:
            raise ValueError("cache='disk' needs cache_dir (a folder for the preprocessed volumes)")
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        return PersistentDataset(data=list(data), transform=transform, cache_dir=cache_dir)
    return Dataset(data=list(data), transform=transform)


class FlattenedDataset(torch.utils.data.Dataset):
    """One index per element of the lists that a volume dataset's items are.

    Args:
        data: datalist items (one per volume).
        transform: deterministic, cached per volume; its output for one volume is a list of samples
            (e.g. ending with :class:`transforms.Octantsd`) or a single sample.
        sample_transform: applied to each sample on access, not cached (intensity normalisation,
            random augmentation).
        cache, cache_rate, cache_dir, num_workers: see :func:`volume_dataset`.
        max_bad_cases: cases that may fail to load (each is reported once with its uid and excluded);
            one more stops with a summary.

    The index is built once at construction by reading every volume through the cache (the cached
    dataset is built then as well), so ``len()`` is the number of samples, as in the reference.
    """

    def __init__(
        self,
        data: Sequence[dict],
        transform: Callable | None,
        sample_transform: Callable | Sequence[Callable] | None = None,
        cache: str = "memory",
        cache_rate: float = 1.0,
        cache_dir: str | Path | None = None,
        num_workers: int | None = 1,
        max_bad_cases: int = 10,
    ) -> None:
        self.data = list(data)
        self.transform = transform
        safe = SkipBadCase(transform) if transform is not None else None
        self.volumes = volume_dataset(self.data, safe, cache, cache_rate, cache_dir, num_workers)
        self.bad_cases: list[tuple[str, str]] = []
        if sample_transform is not None and not callable(sample_transform):
            sample_transform = Compose(list(sample_transform))
        self.sample_transform = sample_transform
        self.index: list[tuple[int, int]] = []
        self.foreground: list[float] = []  # foreground voxel count of each sample (for class weights)
        self.voxels: list[int] = []
        for i in range(len(self.volumes)):
            samples = self._as_list(self.volumes[i])
            if len(samples) == 1 and isinstance(samples[0], dict) and LOAD_ERROR_KEY in samples[0]:
                uid, message = samples[0]["uid"], samples[0][LOAD_ERROR_KEY]
                self.bad_cases.append((uid, message))
                logger.error(f"case {uid} is excluded: {message}")
                continue
            for j, s in enumerate(samples):
                self.index.append((i, j))
                label = s.get("label") if isinstance(s, dict) else None
                if label is not None:
                    lab = torch.as_tensor(label)
                    self.foreground.append(float((lab > 0).sum()))
                    self.voxels.append(int(lab.numel()))
        if len(self.bad_cases) > max_bad_cases or (self.bad_cases and not self.index):
            listing = "; ".join(f"{u}: {m}" for u, m in self.bad_cases[:5])
            raise InputError(
                f"{len(self.bad_cases)} of {len(self.data)} cases could not be used (limit max_bad_cases ="
                f" {max_bad_cases}); stopping. First: {listing}"
            )
        logger.info(f"{len(self.index)} samples from {len(self.volumes) - len(self.bad_cases)} volumes"
                    + (f" ({len(self.bad_cases)} cases excluded)" if self.bad_cases else ""))

    @staticmethod
    def _as_list(item: Any) -> list:
        return list(item) if isinstance(item, (list, tuple)) else [item]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> Any:
        i, j = self.index[k]
        sample = self._as_list(self.volumes[i])[j]
        if self.sample_transform is not None:
            sample = self.sample_transform(dict(sample))
        return sample

    def volume_of(self, k: int) -> int:
        """Index (into ``data``) of the volume that sample ``k`` comes from."""
        return self.index[k][0]
