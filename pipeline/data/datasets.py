"""Datasets for training: cached whole-volume preprocessing, one training sample per octant.

The reference trains on (uid, octant) pairs: each preprocessed volume is cut into 2x2x2 octants and
octants without lung are dropped, so a batch of 4 holds 4 octants from any volumes. MONAI caches
per volume (``CacheDataset`` / ``PersistentDataset``) and flattens list-returning transforms only
inside a batch (``list_data_collate``), which would tie the batch to whole volumes; it has no dataset
that exposes each element of a cached list as its own index, so :class:`FlattenedDataset` does that
on top of MONAI's caches.

Under ``torchrun`` (``shard=True``) each process preprocesses only its share of the cases (MONAI's
``partition_dataset``: case ``i`` belongs to rank ``i % world``): with the memory cache it also holds and
trains on only that share (:class:`ShardSampler` shuffles within it, as MONAI's DDP tutorials do); with the
disk cache the processes build one shared cache (:class:`SharedCacheDataset`), wait for each other, and then
every process indexes every case, so samples stay shuffled across the whole training set.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, DistributedSampler, PersistentDataset, partition_dataset
from monai.data.utils import SUPPORTED_PICKLE_MOD
from monai.transforms import Compose, Transform
from monai.utils import convert_to_tensor, look_up_option

from pipeline import device as devices
from pipeline.errors import cause_message
from transforms.errors import InputError

try:  # POSIX: a build lock per cache file (released by the kernel if its holder dies)
    import fcntl
except ImportError:  # pragma: no cover - Windows: writes stay atomic, concurrent builders may both compute
    fcntl = None  # type: ignore[assignment]

__all__ = ["CACHE_CHOICES", "LOAD_ERROR_KEY", "FlattenedDataset", "ShardSampler", "SharedCacheDataset", "SkipBadCase",
           "volume_dataset"]

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


class SharedCacheDataset(PersistentDataset):
    """MONAI's ``PersistentDataset`` whose cache files several processes can build and read at once.

    MONAI writes a cache file in the system's temporary folder and moves it into ``cache_dir``; across
    file systems that move is a copy, which another process can read half-written, and two processes that
    miss the same file both compute it. Here each file is written beside its final name and renamed
    (atomic on one file system), and its build holds an exclusive lock on ``.locks/<file>.lock``: a process that
    finds the lock taken waits, then reads the finished file instead of computing it again.
    """

    def _cachecheck(self, item_transformed: Any) -> Any:
        if self.cache_dir is None:
            return super()._cachecheck(item_transformed)
        name = self.hash_func(item_transformed).decode("utf-8") + self.transform_hash
        hashfile = Path(self.cache_dir) / f"{name}.pt"
        if hashfile.is_file():
            return torch.load(hashfile, weights_only=self.weights_only)
        locks = hashfile.parent / ".locks"  # kept: removing a lock file while another process waits on it is a race
        locks.mkdir(exist_ok=True)
        with open(locks / f"{hashfile.name}.lock", "a") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (or the process dies)
            if hashfile.is_file():  # another process built it while this one waited
                return torch.load(hashfile, weights_only=self.weights_only)
            result = self._pre_transform(deepcopy(item_transformed))
            tmp = hashfile.with_name(f".{hashfile.name}.{os.getpid()}.tmp")
            try:
                torch.save(convert_to_tensor(result, convert_numeric=False, track_meta=self.track_meta), tmp,
                           pickle_module=look_up_option(self.pickle_module, SUPPORTED_PICKLE_MOD),
                           pickle_protocol=self.pickle_protocol)
                os.replace(tmp, hashfile)
            finally:
                tmp.unlink(missing_ok=True)
        return result


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
            (:class:`SharedCacheDataset` under ``cache_dir``) or ``"none"``.
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
        return SharedCacheDataset(data=list(data), transform=transform, cache_dir=cache_dir)
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
        shard: under several processes (``torchrun``), preprocess only this process's share of ``data``
            (case ``i`` is rank ``i % world``'s). Memory or no cache: the dataset is that share alone
            (``partitioned``). Disk cache: the shares are written to one shared cache, the processes wait for
            each other, and the dataset is every case. With fewer cases than processes every process takes
            every case. A collective: every process must build it.
        rank, world_size: this process's rank and the number of processes (default: the process group's).

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
        shard: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        all_data = list(data)
        self.rank = devices.get_rank() if rank is None else int(rank)
        self.world_size = devices.get_world_size() if world_size is None else int(world_size)
        sharded = bool(shard) and self.world_size > 1
        if sharded and len(all_data) < self.world_size:
            logger.warning(f"{len(all_data)} cases for {self.world_size} processes: every process prepares and "
                           "holds all of them")
            sharded = False
        #: whether this dataset is this process's share only (else every case)
        self.partitioned = sharded and cache != "disk"
        own = partition_dataset(all_data, num_partitions=self.world_size)[self.rank] if sharded else all_data
        self.data = own if self.partitioned else all_data
        self.transform = transform
        safe = SkipBadCase(transform) if transform is not None else None
        self.volumes = volume_dataset(self.data, safe, cache, cache_rate, cache_dir, num_workers)
        if sharded and not self.partitioned:  # shared disk cache: build this process's share, then read them all
            for i in range(self.rank, len(all_data), self.world_size):
                self.volumes[i]
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.barrier()
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
        #: samples that each process draws per epoch (the largest share; see :class:`ShardSampler`)
        self.samples_per_process = len(self.index)
        bad_cases, samples, volumes = self.bad_cases, len(self.index), len(self.volumes)
        if self.partitioned:  # decide on every process alike: counts over all shares
            mine = (self.bad_cases, len(self.index), len(self.volumes))
            shares = devices.all_gather_object(mine) or [mine]
            bad_cases = [b for share in shares for b in share[0]]
            samples, volumes = sum(share[1] for share in shares), sum(share[2] for share in shares)
            self.samples_per_process = max(share[1] for share in shares)
        if self.partitioned and not self.index and len(bad_cases) <= max_bad_cases:
            raise InputError(f"process {self.rank} of {self.world_size} has no usable case in its share; use fewer "
                             "processes or the disk cache (cache='disk')")
        if len(bad_cases) > max_bad_cases or (bad_cases and not samples):
            listing = "; ".join(f"{u}: {m}" for u, m in bad_cases[:5])
            raise InputError(
                f"{len(bad_cases)} of {len(all_data)} cases could not be used (limit max_bad_cases ="
                f" {max_bad_cases}); stopping. First: {listing}"
            )
        share = (f"; this process holds {len(self.index)} of them from {len(self.volumes)} volumes (its share)"
                 if self.partitioned else "")
        logger.info(f"{samples} samples from {volumes - len(bad_cases)} volumes"
                    + (f" ({len(bad_cases)} cases excluded)" if bad_cases else "") + share)

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


class ShardSampler(DistributedSampler):
    """MONAI's ``DistributedSampler`` for a :class:`FlattenedDataset`, which may hold only this process's share.

    A dataset of every case (one process, the shared disk cache, or fewer cases than processes) is split
    across processes as ``DistributedSampler`` does: one permutation of all samples per epoch
    (``seed`` + epoch), cut into equal parts; without ``even_divisible`` and with fewer samples than
    processes, every process takes every sample. A ``partitioned`` dataset is this process's share: its
    samples are permuted per epoch (``seed``, epoch and rank) and, with ``even_divisible``, repeated
    cyclically up to the largest share, so every process runs the same number of iterations (DDP needs
    that) and every sample is drawn at least once per epoch.

    The engines call ``set_epoch`` at each epoch start (MONAI's ``Workflow`` does so for a ``DistributedSampler``).
    """

    def __init__(self, dataset: FlattenedDataset, shuffle: bool = True, seed: int = 0, even_divisible: bool = True,
                 num_replicas: int | None = None, rank: int | None = None) -> None:
        self.partitioned = bool(getattr(dataset, "partitioned", False))
        if num_replicas is None:
            num_replicas = getattr(dataset, "world_size", None) or devices.get_world_size()
        if rank is None:
            rank = getattr(dataset, "rank", None) if num_replicas > 1 else 0
            rank = devices.get_rank() if rank is None else rank
        if self.partitioned:  # MONAI's attributes (epoch, seed, ...), then this process's own sample count
            super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
            self.num_samples = int(dataset.samples_per_process) if even_divisible else len(dataset)
            self.total_size = self.num_samples * self.num_replicas
        elif not even_divisible and len(dataset) < num_replicas:
            super().__init__(dataset, even_divisible=True, num_replicas=1, rank=0, shuffle=shuffle, seed=seed)
        else:
            super().__init__(dataset, even_divisible=even_divisible, num_replicas=num_replicas, rank=rank,
                             shuffle=shuffle, seed=seed)

    def __iter__(self) -> Iterator[int]:
        if not self.partitioned:
            return super().__iter__()
        n = len(self.dataset)
        if self.shuffle:
            state = np.random.SeedSequence([self.seed, self.epoch, self.rank]).generate_state(2)
            g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            order = torch.randperm(n, generator=g).tolist()
        else:
            order = list(range(n))
        order = (order * math.ceil(self.num_samples / max(n, 1)))[: self.num_samples]
        return iter(order)

    def __len__(self) -> int:
        return self.num_samples
