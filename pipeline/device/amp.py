"""Mixed precision on any device: how the reference's apex options map onto ``torch.autocast`` + ``GradScaler``.

AMP levels: how the reference's apex ``--amp --opt-level O0|O1|O2 --loss-scale 128|dynamic`` maps onto native
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

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from transforms.errors import InputError

from .select import device_type

__all__ = ["DYNAMIC_LOSS_SCALE", "OPT_LEVELS", "AmpSettings", "StaticGradScaler", "amp_dtype", "amp_settings",
           "autocast", "grad_scaler", "keep_norm_in_fp32"]

OPT_LEVELS = ("O0", "O1", "O2")
DYNAMIC_LOSS_SCALE = "dynamic"
_DTYPE_NAMES = {
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}  # fmt: skip
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)  # BatchNorm*, InstanceNorm*, ...


def amp_dtype(device: torch.device | str, requested: torch.dtype | str | None = None) -> torch.dtype:
    """Autocast dtype: ``requested`` (a dtype or ``"fp16"``/``"bf16"``), else float16 on cuda/npu, bfloat16 on cpu."""
    if requested is None:
        return torch.bfloat16 if device_type(device) == "cpu" else torch.float16
    if isinstance(requested, torch.dtype):
        if requested not in (torch.float16, torch.bfloat16):
            raise InputError(f"AMP dtype {requested}: expected torch.float16 or torch.bfloat16")
        return requested
    key = str(requested).strip().lower()
    if key not in _DTYPE_NAMES:
        raise InputError(f"AMP dtype {requested!r}: expected one of {', '.join(_DTYPE_NAMES)}")
    return _DTYPE_NAMES[key]


def autocast(
    device: torch.device | str, enabled: bool = True, dtype: torch.dtype | str | None = None
) -> torch.autocast:
    """``torch.autocast`` for ``device``'s type and :func:`amp_dtype` (a context manager)."""
    return torch.autocast(device_type(device), dtype=amp_dtype(device, dtype), enabled=enabled)


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
        raise InputError(f"--loss-scale {loss_scale!r}: expected 'dynamic' or a positive number such as 128")
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
    kind = device_type(device)
    scale = _parse_loss_scale(loss_scale)
    if not enabled or scale is None or amp_dtype(kind, dtype) != torch.float16:
        return None
    if kind == "npu":
        # Older Atlas training chips lack inf/NaN mode: torch_npu's own scaler reads hardware overflow flags.
        supports_inf_nan = getattr(getattr(getattr(torch, "npu", None), "utils", None), "is_support_inf_nan", None)
        if supports_inf_nan is not None and not supports_inf_nan():
            if scale == DYNAMIC_LOSS_SCALE:
                return torch.npu.amp.GradScaler(dynamic=True)
            return torch.npu.amp.GradScaler(init_scale=scale, dynamic=False)
    if scale == DYNAMIC_LOSS_SCALE:
        return torch.amp.GradScaler(kind)
    return StaticGradScaler(kind, scale)


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
    """Map the reference's ``--amp --opt-level --loss-scale`` onto :class:`AmpSettings` (see the module docstring).

    Raises:
        InputError: unknown ``opt_level``, bad ``loss_scale`` or ``dtype``.
    """
    level = str(opt_level).strip().upper()
    if level not in OPT_LEVELS:
        raise InputError(f"--opt-level {opt_level!r}: expected one of {', '.join(OPT_LEVELS)}")
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

