"""Devices, distribution and mixed precision for CPU, CUDA and Ascend NPU: the only module that touches
``torch.cuda``, ``torch.npu`` or ``torch_npu``.

``torch_npu`` is never imported when this module is imported; :func:`ensure_npu_backend` imports it
on demand, guarded (its mere presence without CANN breaks ``import torch``; see
``reference/npu-and-distributed.md`` §1.4). Device-generic calls go through
``torch.get_device_module(type)`` and ``torch.accelerator``.

AMP levels: how the seed's apex ``--amp --opt-level O0|O1|O2 --loss-scale 128|dynamic`` maps onto native
``torch.autocast`` + ``torch.amp.GradScaler`` (:func:`amp_settings`):

- **O0**: fp32, AMP off (as apex).
- **O1**: apex patches torch functions (whitelist to fp16, blacklist to fp32) around fp32 weights, dynamic
  loss scale. Here: fp32 weights under ``torch.autocast(device.type, dtype)``, whose per-op lists play the
  same role (convolutions/matmuls in fp16 or bf16, reductions and losses in fp32); same loss scale options.
- **O2**: apex casts the model to fp16, keeps BatchNorm in fp32 and fp32 master weights in the optimizer,
  dynamic loss scale by default. Here: fp32 weights (no fp16 copy, no master weights) under autocast, with
  every norm layer (BatchNorm, InstanceNorm, GroupNorm, LayerNorm) run in fp32 (:func:`keep_norm_in_fp32`),
  static or dynamic loss scale. The same: convolutions in half precision, BatchNorm in fp32, fp32 weight
  updates from unscaled gradients. Different: weights are never stored or rounded to fp16 (more weight
  memory, checkpoints hold fp32 only); activations between convolutions follow autocast's lists instead of
  being fp16 everywhere; InstanceNorm/GroupNorm/LayerNorm stay fp32 too (apex O2 casts them to fp16).
  apex O3 (pure fp16) has no equivalent.

bfloat16 needs no loss scaling (:func:`grad_scaler` returns ``None``). Dynamic scaling uses apex's
defaults (initial scale 2**16, halved on overflow, doubled after 2000 clean steps). A **static** scale
(``--loss-scale 128``) stays fixed, but unlike apex a step whose gradients hold inf/NaN is still **skipped**
(apex's static scaler does not check for overflow and applies such a step).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import random
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DEVICE_CHOICES",
    "AmpSettings",
    "DeviceError",
    "StaticGradScaler",
    "amp_dtype",
    "amp_settings",
    "autocast",
    "all_gather_object",
    "cleanup_distributed",
    "describe",
    "detect_device_type",
    "dist_backend",
    "ensure_npu_backend",
    "get_rank",
    "get_world_size",
    "grad_scaler",
    "init_distributed",
    "is_main_process",
    "keep_norm_in_fp32",
    "map_legacy_ascend_env",
    "max_memory_allocated",
    "seed_everything",
    "setup_device",
    "synchronize",
]

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "npu")
OPT_LEVELS = ("O0", "O1", "O2")
DYNAMIC_LOSS_SCALE = "dynamic"
DEFAULT_DIST_TIMEOUT_S = 1800
DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = "29500"  # torch.distributed's default port
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
_DTYPE_NAMES = {
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}  # fmt: skip
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)  # BatchNorm*, InstanceNorm*, ...
_AUTOLOAD_ENV = "TORCH_DEVICE_BACKEND_AUTOLOAD"
_NPU_NOT_INSTALLED = "torch_npu is not installed"
_CANN_HINT = (
    "check that the CANN libraries are installed and `source <CANN>/set_env.sh` was run, "
    "and that torch_npu, torch and CANN versions are paired"
)


def _input_error(message: str) -> ValueError:
    """``transforms.errors.InputError(message)``, imported on use: the ``transforms`` package imports MONAI,
    and this module must stay cheap to import (torchrun workers, the CLI, subprocess tests)."""
    from transforms.errors import InputError

    return InputError(message)


class DeviceError(RuntimeError):
    """The requested device or backend cannot be used here. The message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# ----------------------------------------------------------------------------------------- selection
def _device_type(device: torch.device | str) -> str:
    """``"npu"`` for ``"npu:1"`` too, without asking torch (which rejects ``"npu"`` until torch_npu is loaded)."""
    return device.type if isinstance(device, torch.device) else str(device).split(":", 1)[0].strip().lower()


def _torch_release() -> str:
    return torch.__version__.split("+")[0]


def _npu_backend_problem() -> str | None:
    """Why ``torch.npu`` is unusable (``None`` when it is there), importing torch_npu if needed."""
    if hasattr(torch, "npu"):  # autoloaded, imported before, or a test stand-in
        return None
    if importlib.util.find_spec("torch_npu") is None:
        return _NPU_NOT_INSTALLED
    autoload = os.environ.get(_AUTOLOAD_ENV)
    try:
        importlib.import_module("torch_npu")
    except (ImportError, OSError, RuntimeError) as exc:
        # A failed import leaves TORCH_DEVICE_BACKEND_AUTOLOAD=0 behind for child processes: restore it.
        if autoload is None:
            os.environ.pop(_AUTOLOAD_ENV, None)
        else:
            os.environ[_AUTOLOAD_ENV] = autoload
        return f"torch_npu failed to load ({type(exc).__name__}: {exc}); {_CANN_HINT}"
    return None if hasattr(torch, "npu") else "torch_npu was imported but did not register torch.npu"


def ensure_npu_backend() -> bool:
    """Make ``torch.npu`` available if torch_npu can be loaded; never raises.

    Returns:
        ``True`` when ``torch.npu`` exists (autoloaded, imported now, or installed by a test fake).
    """
    return _npu_backend_problem() is None


def _check_choice(requested: str | None) -> str:
    choice = "auto" if requested is None else str(requested).strip().lower()
    if choice not in DEVICE_CHOICES:
        raise _input_error(f"--device {requested!r}: expected one of {', '.join(DEVICE_CHOICES)}")
    return choice


def detect_device_type(requested: str | None = "auto") -> str:
    """The device type to run on.

    Args:
        requested: one of :data:`DEVICE_CHOICES`. ``"auto"`` picks NPU, then CUDA, then CPU; an
            explicit type wins and must be usable.

    Returns:
        ``"cpu"``, ``"cuda"`` or ``"npu"``.

    Raises:
        InputError: ``requested`` is not one of :data:`DEVICE_CHOICES`.
        DeviceError: ``"npu"`` without a loadable torch_npu or a visible NPU; ``"cuda"`` without CUDA.
    """
    choice = _check_choice(requested)
    if choice == "cpu":
        return "cpu"
    if choice == "npu":
        problem = _npu_backend_problem()
        if problem is not None:
            raise DeviceError(
                f"--device npu: {problem}; install the torch_npu matching this torch and your CANN release: "
                f"pip install torch-npu=={_torch_release()}"
            )
        if not torch.npu.is_available():
            raise DeviceError(
                "--device npu: torch_npu is loaded but no NPU is visible "
                "(check the driver, `npu-smi info` and ASCEND_RT_VISIBLE_DEVICES)"
            )
        return "npu"
    if choice == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA device is visible"
            raise DeviceError(f"--device cuda: {why} (torch {torch.__version__}); use --device cpu or auto")
        return "cuda"
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if accelerator is not None and accelerator.type in ("npu", "cuda"):
        return accelerator.type
    problem = _npu_backend_problem()
    if problem is None and torch.npu.is_available():
        return "npu"
    fallback = "cuda" if torch.cuda.is_available() else "cpu"
    if problem is not None and problem != _NPU_NOT_INSTALLED:  # installed but broken: say so, then carry on
        warnings.warn(f"--device auto: {problem}; using {fallback}", RuntimeWarning, stacklevel=2)
    return fallback


def map_legacy_ascend_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Map Ascend ModelZoo launcher variables onto torchrun's when torchrun's are absent.

    ``RANK_ID`` -> ``RANK``, ``RANK_SIZE`` -> ``WORLD_SIZE``, ``DEVICE_ID``/``ASCEND_DEVICE_ID``
    (else ``RANK_ID``) -> ``LOCAL_RANK``, and ``MASTER_ADDR``/``MASTER_PORT`` defaults for ``env://``.

    Args:
        environ: the mapping to update (default ``os.environ``).

    Returns:
        The variables that were set (empty when torchrun's variables exist or no legacy ones do).
    """
    env = os.environ if environ is None else environ
    if "RANK" in env or "LOCAL_RANK" in env or "RANK_ID" not in env:
        return {}
    added = {"RANK": env["RANK_ID"], "LOCAL_RANK": env.get("DEVICE_ID", env.get("ASCEND_DEVICE_ID", env["RANK_ID"]))}
    if "RANK_SIZE" in env and "WORLD_SIZE" not in env:
        added["WORLD_SIZE"] = env["RANK_SIZE"]
    added.setdefault("MASTER_ADDR", env.get("MASTER_ADDR", DEFAULT_MASTER_ADDR))
    added.setdefault("MASTER_PORT", env.get("MASTER_PORT", DEFAULT_MASTER_PORT))
    env.update(added)
    return added


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise _input_error(f"environment variable {name}={value!r}: expected an integer") from None


def setup_device(requested: str | None = "auto", device_id: int | None = None) -> torch.device:
    """Pick the device, make it current and return it.

    Args:
        requested: one of :data:`DEVICE_CHOICES` (see :func:`detect_device_type`).
        device_id: device index; default ``LOCAL_RANK`` (0 when unset; Ascend's ``DEVICE_ID`` /
            ``ASCEND_DEVICE_ID`` when launched by a ModelZoo-style shell loop).

    Returns:
        ``torch.device("cpu")`` or ``torch.device(type, index)``.

    Raises:
        InputError: bad ``requested`` / ``device_id`` / ``LOCAL_RANK``.
        DeviceError: the device type is unusable or the index is out of range.
    """
    device_type = detect_device_type(requested)
    if device_type == "cpu":
        return torch.device("cpu")
    map_legacy_ascend_env()
    index = _env_int("LOCAL_RANK", 0) if device_id is None else device_id
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise _input_error(f"--device_id {device_id!r}: expected a non-negative integer")
    module = torch.get_device_module(device_type)
    count = module.device_count()
    if index >= count:
        raise DeviceError(f"{device_type} index {index} is out of range: {count} {device_type} device(s) visible")
    if hasattr(module, "set_device"):
        module.set_device(index)
    else:
        torch.accelerator.set_device_index(index)
    return torch.device(device_type, index)


# --------------------------------------------------------------------------------------- distribution
def dist_backend(device: torch.device | str, override: str | None = None) -> str:
    """The ``init_process_group`` backend string for ``device``.

    Args:
        device: the training device.
        override: the seed's ``--dist_backend`` (e.g. ``"hccl"``, ``"nccl"``, ``"gloo"``) or a full
            ``"cpu:gloo,npu:hccl"`` string; ``None``/``""`` picks the default.

    Returns:
        ``"gloo"`` on CPU, else ``"cpu:gloo,<type>:<backend>"`` (CPU tensors always keep gloo).

    Raises:
        InputError: unknown backend name or one that cannot serve the device.
    """
    dev_type = _device_type(device)
    text = (override or "").strip().lower()
    if not text:
        if dev_type not in DEFAULT_DEVICE_BACKENDS:
            raise _input_error(f"device {device!r}: no default process-group backend; expected cpu, cuda or npu")
        return "gloo" if dev_type == "cpu" else f"cpu:gloo,{dev_type}:{DEFAULT_DEVICE_BACKENDS[dev_type]}"
    pairs = [p.split(":", 1) for p in text.split(",")] if ":" in text else [["cpu", "gloo"], [dev_type, text]]
    mapping: dict[str, str] = {}
    for pair in pairs:
        if len(pair) != 2 or pair[1] not in BACKEND_DEVICES:
            raise _input_error(
                f"--dist_backend {override!r}: expected one of {', '.join(BACKEND_DEVICES)} "
                "or '<device>:<backend>,...' such as 'cpu:gloo,npu:hccl'"
            )
        if pair[0] not in BACKEND_DEVICES[pair[1]]:
            raise _input_error(
                f"--dist_backend {override!r}: backend {pair[1]!r} cannot run on {pair[0]!r} "
                f"(it serves {', '.join(BACKEND_DEVICES[pair[1]])})"
            )
        mapping[pair[0]] = pair[1]
    if dev_type not in mapping:
        raise _input_error(f"--dist_backend {override!r}: names no backend for the training device {dev_type!r}")
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
    if _env_int("WORLD_SIZE", 1) <= 1:
        return False
    if not dist.is_available():
        raise DeviceError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but this torch has no torch.distributed")
    timeout = timedelta(seconds=timeout_s)
    store = _restart_store(timeout)
    if store is None:
        dist.init_process_group(backend=dist_backend(device, backend), init_method="env://", timeout=timeout)
    else:
        dist.init_process_group(backend=dist_backend(device, backend), store=store, rank=_env_int("RANK", 0),
                                world_size=_env_int("WORLD_SIZE", 1), timeout=timeout)
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
    attempt = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
    if attempt <= 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or _env_int("GROUP_WORLD_SIZE", 1) != 1:
        return None
    client = dist.TCPStore(os.environ["MASTER_ADDR"], _env_int("MASTER_PORT", 0), _env_int("WORLD_SIZE", 1),
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
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else _env_int("RANK", 0)


def get_world_size() -> int:
    """World size: the process group's, else ``WORLD_SIZE`` (1 when unset)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else _env_int("WORLD_SIZE", 1)


def is_main_process() -> bool:
    """Whether this is rank 0 (the process that logs and writes checkpoints)."""
    return get_rank() == 0


# ------------------------------------------------------------------------------------------------ AMP
def amp_dtype(device: torch.device | str, requested: torch.dtype | str | None = None) -> torch.dtype:
    """Autocast dtype: ``requested`` (a dtype or ``"fp16"``/``"bf16"``), else float16 on cuda/npu, bfloat16 on cpu."""
    if requested is None:
        return torch.bfloat16 if _device_type(device) == "cpu" else torch.float16
    if isinstance(requested, torch.dtype):
        if requested not in (torch.float16, torch.bfloat16):
            raise _input_error(f"AMP dtype {requested}: expected torch.float16 or torch.bfloat16")
        return requested
    key = str(requested).strip().lower()
    if key not in _DTYPE_NAMES:
        raise _input_error(f"AMP dtype {requested!r}: expected one of {', '.join(_DTYPE_NAMES)}")
    return _DTYPE_NAMES[key]


def autocast(
    device: torch.device | str, enabled: bool = True, dtype: torch.dtype | str | None = None
) -> torch.autocast:
    """``torch.autocast`` for ``device``'s type and :func:`amp_dtype` (a context manager)."""
    return torch.autocast(_device_type(device), dtype=amp_dtype(device, dtype), enabled=enabled)


def _parse_loss_scale(loss_scale: float | str | None) -> float | str | None:
    if loss_scale is None:
        return None
    if isinstance(loss_scale, str) and loss_scale.strip().lower() == DYNAMIC_LOSS_SCALE:
        return DYNAMIC_LOSS_SCALE
    try:
        value = float(loss_scale)
    except (TypeError, ValueError):
        value = float("nan")
    if not np.isfinite(value) or value <= 0:
        raise _input_error(f"--loss-scale {loss_scale!r}: expected 'dynamic' or a positive number such as 128")
    return value


class StaticGradScaler(torch.amp.GradScaler):
    """A GradScaler whose scale never changes (apex ``loss_scale=<number>``).

    ``torch.amp.GradScaler`` refuses ``growth_factor=1.0``/``backoff_factor=1.0``, so every
    :meth:`update` resets the scale instead. Steps with inf/NaN gradients are still skipped.
    """

    def __init__(self, device: str, loss_scale: float) -> None:
        super().__init__(device, init_scale=loss_scale)
        self.static_scale = float(loss_scale)

    def update(self, new_scale: float | torch.Tensor | None = None) -> None:
        super().update(self.static_scale if new_scale is None else new_scale)


def grad_scaler(
    device: torch.device | str,
    enabled: bool = True,
    dtype: torch.dtype | str | None = None,
    loss_scale: float | str | None = DYNAMIC_LOSS_SCALE,
) -> torch.amp.GradScaler | None:
    """The loss scaler for float16 AMP; ``None`` when AMP is off, for bfloat16, or ``loss_scale=None``.

    Args:
        device: the training device.
        enabled: whether AMP is on.
        dtype: autocast dtype (see :func:`amp_dtype`).
        loss_scale: ``"dynamic"`` or a static scale (e.g. ``128``); ``None`` = no scaling.

    Returns:
        ``torch.amp.GradScaler(device.type)`` (dynamic), :class:`StaticGradScaler` (static), or on
        NPUs without inf/NaN mode ``torch.npu.amp.GradScaler`` (hardware overflow flags).
    """
    device_type = _device_type(device)
    scale = _parse_loss_scale(loss_scale)
    if not enabled or scale is None or amp_dtype(device_type, dtype) != torch.float16:
        return None
    if device_type == "npu":
        # Older Atlas training chips lack inf/NaN mode: torch_npu's own scaler reads hardware overflow flags.
        supports_inf_nan = getattr(getattr(getattr(torch, "npu", None), "utils", None), "is_support_inf_nan", None)
        if supports_inf_nan is not None and not supports_inf_nan():
            if scale == DYNAMIC_LOSS_SCALE:
                return torch.npu.amp.GradScaler(dynamic=True)
            return torch.npu.amp.GradScaler(init_scale=scale, dynamic=False)
    if scale == DYNAMIC_LOSS_SCALE:
        return torch.amp.GradScaler(device_type)
    return StaticGradScaler(device_type, scale)


@dataclass(frozen=True)
class AmpSettings:
    """Resolved mixed-precision settings.

    Attributes:
        enabled: autocast on.
        dtype: autocast dtype (``torch.float32`` when disabled).
        keep_norm_fp32: run norm layers in fp32 (:func:`keep_norm_in_fp32`), level O2.
        loss_scale: ``"dynamic"``, a static float, or ``None`` (no scaler: AMP off or bfloat16).
    """

    enabled: bool
    dtype: torch.dtype
    keep_norm_fp32: bool
    loss_scale: float | str | None


def amp_settings(
    device: torch.device | str,
    amp: bool = False,
    opt_level: str = "O2",
    loss_scale: float | str | None = DYNAMIC_LOSS_SCALE,
    dtype: torch.dtype | str | None = None,
) -> AmpSettings:
    """Map the seed's ``--amp --opt-level --loss-scale`` onto :class:`AmpSettings` (see the module docstring).

    Raises:
        InputError: unknown ``opt_level``, bad ``loss_scale`` or ``dtype``.
    """
    level = str(opt_level).strip().upper()
    if level not in OPT_LEVELS:
        raise _input_error(f"--opt-level {opt_level!r}: expected one of {', '.join(OPT_LEVELS)}")
    scale = _parse_loss_scale(loss_scale)
    if not amp or level == "O0":
        return AmpSettings(enabled=False, dtype=torch.float32, keep_norm_fp32=False, loss_scale=None)
    resolved = amp_dtype(device, dtype)
    return AmpSettings(
        enabled=True,
        dtype=resolved,
        keep_norm_fp32=level == "O2",
        loss_scale=scale if resolved == torch.float16 else None,
    )


class _Fp32NormForward:
    """Stored as a norm layer's instance ``forward``: run the class's forward in fp32 with autocast off.

    A plain picklable object (not a closure or wrapper module), so pickling, ``deepcopy`` and
    ``state_dict`` keys are unchanged. Autocast is disabled rather than trusted, because whether norms
    are on a device's low-precision cast list differs between backends.
    """

    # networks.fused may replace this norm's call by its compiled kernel, which normalises in fp32 and returns the
    # input's dtype, as this wrapper does
    computes_in_fp32 = True

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not x.is_floating_point() or not torch.is_autocast_enabled(x.device.type):
            return type(self.module).forward(self.module, x, *args, **kwargs)
        with torch.autocast(x.device.type, enabled=False):
            out = type(self.module).forward(self.module, x.float(), *args, **kwargs)
        return out.to(x.dtype)


def keep_norm_in_fp32(model: nn.Module) -> nn.Module:
    """Make every BatchNorm/InstanceNorm/GroupNorm/LayerNorm of ``model`` run in fp32 under autocast.

    The norm's input is cast to float32, autocast is disabled for it, and its output is cast back to
    the input dtype. Outside autocast the layers behave as before. No parameters, buffers or
    ``state_dict`` keys are added. Apply only with AMP: TorchScript cannot script the patched forward.

    Returns:
        ``model``, modified in place.
    """
    for module in model.modules():
        if isinstance(module, _NORM_TYPES) and not isinstance(module.__dict__.get("forward"), _Fp32NormForward):
            module.forward = _Fp32NormForward(module)
    return model


# --------------------------------------------------------------------------------------------- misc
def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (no-op on CPU); use before reading wall-clock timings."""
    device = torch.device(device)
    if device.type != "cpu":
        torch.get_device_module(device.type).synchronize(device)


def max_memory_allocated(device: torch.device | str) -> int | None:
    """Peak bytes allocated on the device by this process, or ``None`` (CPU, or no memory stats)."""
    device = torch.device(device)
    if device.type == "cpu":
        return None
    query = getattr(torch.get_device_module(device.type), "max_memory_allocated", None)
    try:
        return None if query is None else int(query(device))
    except (RuntimeError, TypeError, ValueError):
        return None


def seed_everything(seed: int, rank: int = 0, deterministic: bool = False) -> int:
    """Seed Python, numpy, torch and the device module with ``seed + rank``.

    Args:
        seed: base seed.
        rank: process rank (each rank gets its own stream).
        deterministic: also call ``monai.utils.set_determinism`` (deterministic cuDNN etc.).

    Returns:
        The seed used.
    """
    value = int(seed) + int(rank)
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    for device_type in ("cuda", "npu"):
        module = getattr(torch, device_type, None)
        if module is not None and module.is_available():
            module.manual_seed_all(value)
    if deterministic:
        from monai.utils import set_determinism

        set_determinism(seed=value)
    return value


def describe(device: torch.device | str) -> str:
    """A one-line description for logs, e.g. ``"cpu (2 threads)"``, ``"cuda:0 (NVIDIA H100)"``."""
    device = torch.device(device)
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    name_of = getattr(torch.get_device_module(device.type), "get_device_name", None)
    try:
        name = name_of(device.index if device.index is not None else 0) if name_of else None
    except (RuntimeError, AssertionError, ValueError):
        name = None
    return f"{device} ({name})" if name else str(device)
