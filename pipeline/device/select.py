"""Which device to run on (CPU, CUDA or Ascend NPU) and small device-generic helpers.

``torch_npu`` is never imported when this module is imported; :func:`ensure_npu_backend` imports it on demand,
guarded: without Ascend's CANN libraries its mere presence makes ``import torch`` fail (docs/devices.md).
Device-generic calls go through ``torch.get_device_module(type)`` and ``torch.accelerator``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import warnings

import torch

from transforms.errors import InputError

__all__ = ["DEVICE_CHOICES", "DeviceError", "describe", "detect_device_type", "device_type", "ensure_npu_backend",
           "env_int", "map_legacy_ascend_env", "max_memory_allocated", "setup_device", "synchronize"]

DEVICE_CHOICES = ("auto", "cpu", "cuda", "npu")
DEFAULT_MASTER_ADDR = "127.0.0.1"
DEFAULT_MASTER_PORT = "29500"  # torch.distributed's default port
_AUTOLOAD_ENV = "TORCH_DEVICE_BACKEND_AUTOLOAD"
_NPU_NOT_INSTALLED = "torch_npu is not installed"
_CANN_HINT = (
    "check that the CANN libraries are installed and `source <CANN>/set_env.sh` was run, "
    "and that torch_npu, torch and CANN versions are paired"
)


class DeviceError(RuntimeError):
    """The requested device or backend cannot be used here. The message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


def device_type(device: torch.device | str) -> str:
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
        raise InputError(f"--device {requested!r}: expected one of {', '.join(DEVICE_CHOICES)}")
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


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise InputError(f"environment variable {name}={value!r}: expected an integer") from None


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
    kind = detect_device_type(requested)
    if kind == "cpu":
        return torch.device("cpu")
    map_legacy_ascend_env()
    index = env_int("LOCAL_RANK", 0) if device_id is None else device_id
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise InputError(f"--device_id {device_id!r}: expected a non-negative integer")
    module = torch.get_device_module(kind)
    count = module.device_count()
    if index >= count:
        raise DeviceError(f"{kind} index {index} is out of range: {count} {kind} device(s) visible")
    if hasattr(module, "set_device"):
        module.set_device(index)
    else:
        torch.accelerator.set_device_index(index)
    return torch.device(kind, index)


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

