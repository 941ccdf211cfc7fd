"""Several processes, one per device, launched by ``torchrun``: process groups, ranks, and the DDP-wrapped network.

The backend string keeps gloo for CPU tensors beside the device's own (``"cpu:gloo,cuda:nccl"``,
``"cpu:gloo,npu:hccl"``), so object collectives and metric reductions on CPU tensors work on every device.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from transforms.errors import InputError

from .amp import keep_norm_in_fp32
from .select import DeviceError, device_type, env_int, map_legacy_ascend_env

__all__ = ["BACKEND_DEVICES", "DEFAULT_DIST_TIMEOUT_S", "all_gather_object", "cleanup_distributed", "dist_backend",
           "get_rank", "get_world_size", "init_distributed", "is_main_process", "prepare_network", "sync_buffers"]

logger = logging.getLogger(__name__)

DEFAULT_DIST_TIMEOUT_S = 1800
#: Backends per device type when no override is given (mixed strings keep gloo for CPU tensors).
DEFAULT_DEVICE_BACKENDS = {"cpu": "gloo", "cuda": "nccl", "npu": "hccl"}
#: Process-group backends and the device types each can serve.
BACKEND_DEVICES = {
    "gloo": ("cpu", "cuda"),
    "nccl": ("cuda",),
    "hccl": ("npu",),
    "lccl": ("npu",),
    "mpi": ("cpu", "cuda"),
    "ucc": ("cpu", "cuda"),
}


def dist_backend(device: torch.device | str, override: str | None = None) -> str:
    """The ``init_process_group`` backend string for ``device``.

    Args:
        device: the training device.
        override: the reference's ``--dist_backend`` (e.g. ``"hccl"``, ``"nccl"``, ``"gloo"``) or a full
            ``"cpu:gloo,npu:hccl"`` string; ``None``/``""`` picks the default.

    Returns:
        ``"gloo"`` on CPU, else ``"cpu:gloo,<type>:<backend>"`` (CPU tensors always keep gloo).

    Raises:
        InputError: unknown backend name or one that cannot serve the device.
    """
    dev_type = device_type(device)
    text = (override or "").strip().lower()
    if not text:
        if dev_type not in DEFAULT_DEVICE_BACKENDS:
            raise InputError(f"device {device!r}: no default process-group backend; expected cpu, cuda or npu")
        return "gloo" if dev_type == "cpu" else f"cpu:gloo,{dev_type}:{DEFAULT_DEVICE_BACKENDS[dev_type]}"
    pairs = [p.split(":", 1) for p in text.split(",")] if ":" in text else [["cpu", "gloo"], [dev_type, text]]
    mapping: dict[str, str] = {}
    for pair in pairs:
        if len(pair) != 2 or pair[1] not in BACKEND_DEVICES:
            raise InputError(
                f"--dist_backend {override!r}: expected one of {', '.join(BACKEND_DEVICES)} "
                "or '<device>:<backend>,...' such as 'cpu:gloo,npu:hccl'"
            )
        if pair[0] not in BACKEND_DEVICES[pair[1]]:
            raise InputError(
                f"--dist_backend {override!r}: backend {pair[1]!r} cannot run on {pair[0]!r} "
                f"(it serves {', '.join(BACKEND_DEVICES[pair[1]])})"
            )
        mapping[pair[0]] = pair[1]
    if dev_type not in mapping:
        raise InputError(f"--dist_backend {override!r}: names no backend for the training device {dev_type!r}")
    if set(mapping) == {"cpu"}:
        return mapping["cpu"]
    return ",".join(f"{k}:{v}" for k, v in mapping.items())


def init_distributed(
    device: torch.device | str, backend: str | None = None, timeout_s: float = DEFAULT_DIST_TIMEOUT_S
) -> bool:
    """Join the process group (``env://``) when launched with ``WORLD_SIZE`` > 1.

    Args:
        device: this process's device (from :func:`setup_device`).
        backend: the ``--dist_backend`` override (see :func:`dist_backend`).
        timeout_s: collective timeout, seconds.

    Returns:
        Whether this run is distributed (``True`` also when a group already exists).
    """
    if dist.is_available() and dist.is_initialized():
        return True
    map_legacy_ascend_env()
    if env_int("WORLD_SIZE", 1) <= 1:
        return False
    if not dist.is_available():
        raise DeviceError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but this torch has no torch.distributed")
    timeout = timedelta(seconds=timeout_s)
    store = _restart_store(timeout)
    if store is None:
        dist.init_process_group(backend=dist_backend(device, backend), init_method="env://", timeout=timeout)
    else:
        dist.init_process_group(backend=dist_backend(device, backend), store=store, rank=env_int("RANK", 0),
                                world_size=env_int("WORLD_SIZE", 1), timeout=timeout)
    return True


def _restart_store(timeout: timedelta) -> dist.Store | None:
    """A store for a worker that torchrun restarted on one node, isolated from the failed attempt's keys.

    Since torch 2.5 torchrun's workers share the rendezvous TCPStore of the agent
    (``TORCHELASTIC_USE_AGENT_STORE=True``), whose keys outlive a restart: the restarted workers read the
    dead attempt's gloo/NCCL addresses and fail to connect (pytorch/pytorch#135712, #167288; seen here
    with gloo under ``--max-restarts``). ``env://`` does not separate attempts, so with a single agent (one
    node, where ``TORCHELASTIC_RESTART_COUNT`` is the same on every worker) the group is built on a
    ``PrefixStore`` named after the attempt. With several nodes the counters can differ between agents;
    there torchrun must run with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` (a fresh store per attempt; see the
    README, "Interrupted runs and failures").

    Returns:
        ``None`` where ``env://`` is safe (first attempt, no shared agent store, or several nodes).
    """
    attempt = env_int("TORCHELASTIC_RESTART_COUNT", 0)
    if attempt <= 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or env_int("GROUP_WORLD_SIZE", 1) != 1:
        return None
    client = dist.TCPStore(os.environ["MASTER_ADDR"], env_int("MASTER_PORT", 0), env_int("WORLD_SIZE", 1),
                           is_master=False, timeout=timeout)
    logger.info("torchrun restart %d: process group keys under pipeline/attempt_%d/", attempt, attempt)
    return dist.PrefixStore(f"pipeline/attempt_{attempt}", client)  # keys: pipeline/attempt_N/<key>


def cleanup_distributed() -> None:
    """Wait for every rank (rank 0 may still be writing), then destroy the default process group."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def all_gather_object(obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on every rank; ``None`` when not distributed.

    A collective: every rank must call it.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def get_rank() -> int:
    """Global rank: the process group's, else ``RANK`` (0 when unset)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else env_int("RANK", 0)


def get_world_size() -> int:
    """World size: the process group's, else ``WORLD_SIZE`` (1 when unset)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else env_int("WORLD_SIZE", 1)


def is_main_process() -> bool:
    """Whether this is rank 0 (the process that logs and writes checkpoints)."""
    return get_rank() == 0


def prepare_network(
    network: torch.nn.Module,
    device: torch.device | str,
    keep_norm_fp32: bool = False,
    distributed: bool = False,
    broadcast_buffers: bool = False,
    find_unused_parameters: bool = False,
) -> torch.nn.Module:
    """Move a network to its device, keep norms in fp32 for AMP O2, and wrap it in DDP when distributed.

    Args:
        network: the model, e.g. :class:`networks.VNet`.
        device: target device (``cpu``, ``cuda:i``, ``npu:i``).
        keep_norm_fp32: run normalisation layers in float32 under autocast (AMP level O2).
        distributed: wrap in ``DistributedDataParallel`` (the process group must exist).
        broadcast_buffers: DDP's buffer broadcast; ``False`` as in the Ascend port (BN running
            statistics stay per rank).
        find_unused_parameters: passed to DDP.

    Returns:
        The prepared module (a DDP wrapper when ``distributed``).
    """
    device = torch.device(device)
    network = network.to(device)
    if keep_norm_fp32:
        network = keep_norm_in_fp32(network)
    if distributed:
        device_ids = None if device.type == "cpu" else [device.index if device.index is not None else 0]
        network = torch.nn.parallel.DistributedDataParallel(
            network,
            device_ids=device_ids,
            broadcast_buffers=broadcast_buffers,
            find_unused_parameters=find_unused_parameters,
        )
    return network


def sync_buffers(network: torch.nn.Module, src: int = 0) -> int:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) to every rank; a no-op when not distributed.

    With DDP's ``broadcast_buffers=False`` (the Ascend port's setting) each rank's running statistics
    drift apart. Called when validation starts, it makes every rank evaluate the model rank 0 saves, so
    a validation sharded across ranks reduces to the single-process metric of ``model.pt``.

    Args:
        network: the (DDP-wrapped or plain) network.
        src: the rank whose buffers win.

    Returns:
        The number of buffers broadcast (0 when not distributed).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return 0
    buffers = list(getattr(network, "module", network).buffers())
    for buf in buffers:
        dist.broadcast(buf, src=src)
    return len(buffers)
