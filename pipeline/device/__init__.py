"""Devices, distribution and mixed precision for CPU, CUDA and Ascend NPU: the only package that touches
``torch.cuda``, ``torch.npu`` or ``torch_npu``.

- :mod:`pipeline.device.select`: which device (``auto | cpu | cuda | npu``), torch_npu loaded only when asked;
- :mod:`pipeline.device.amp`: the reference's apex levels O0/O1/O2 and loss scales on ``torch.autocast``;
- :mod:`pipeline.device.distributed`: process groups under ``torchrun`` (gloo / NCCL / HCCL) and the DDP wrapper.

Every public name is re-exported here, so bundle configs write ``pipeline.device.setup_device(...)``.
"""

from __future__ import annotations

from .amp import (
    DYNAMIC_LOSS_SCALE,
    OPT_LEVELS,
    AmpSettings,
    StaticGradScaler,
    amp_dtype,
    amp_settings,
    autocast,
    grad_scaler,
    keep_norm_in_fp32,
)
from .distributed import (
    BACKEND_DEVICES,
    DEFAULT_DIST_TIMEOUT_S,
    all_gather_object,
    cleanup_distributed,
    dist_backend,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    prepare_network,
    sync_buffers,
)
from .select import (
    DEVICE_CHOICES,
    DeviceError,
    describe,
    detect_device_type,
    device_type,
    ensure_npu_backend,
    env_int,
    map_legacy_ascend_env,
    max_memory_allocated,
    setup_device,
    synchronize,
)

__all__ = [
    "BACKEND_DEVICES", "DEFAULT_DIST_TIMEOUT_S", "DEVICE_CHOICES", "DYNAMIC_LOSS_SCALE", "OPT_LEVELS", "AmpSettings",
    "DeviceError", "StaticGradScaler", "all_gather_object", "amp_dtype", "amp_settings", "autocast",
    "cleanup_distributed", "describe", "detect_device_type", "device_type", "dist_backend", "ensure_npu_backend",
    "env_int", "get_rank", "get_world_size", "grad_scaler", "init_distributed", "is_main_process",
    "keep_norm_in_fp32", "map_legacy_ascend_env", "max_memory_allocated", "prepare_network", "setup_device",
    "sync_buffers", "synchronize",
]
