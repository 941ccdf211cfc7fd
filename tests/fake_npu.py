"""A CPU-backed stand-in for an Ascend NPU, for tests only (never imported by product code).

It lets the NPU code paths of :mod:`pipeline.device` (device selection, ``torch.device("npu:1")``,
``torch.autocast("npu")``, ``torch.amp.GradScaler("npu")``, ``init_process_group("cpu:gloo,npu:hccl")``,
DDP over npu tensors, ``torchrun``) run on a CPU-only machine, with PyTorch's PrivateUse1 extension
point (https://pytorch.org/tutorials/advanced/privateuseone.html), in five steps:

1. PrivateUse1 is renamed ``"npu"`` and :class:`FakeNpuModule` is registered as ``torch.npu``.
2. :class:`FakeNpuTensor`, a wrapper tensor subclass whose device is ``npu:<index>`` and whose data
   is a plain CPU tensor (``.raw``); every aten op is run on the CPU tensors and re-wrapped.
3. A PrivateUse1 fallback for ops that reach the npu key without a wrapper argument (factories such
   as ``torch.zeros(..., device="npu")``, CPU -> npu copies) and a fall-through AutocastPrivateUse1
   kernel so ``torch.autocast("npu")`` runs (ops stay in the input dtype: it does **not** emulate
   mixed-precision casting).
4. :class:`HcclOverGloo`, a process-group backend registered as ``"hccl"`` for the ``npu`` device,
   which forwards every collective to gloo on the CPU tensors and counts them in :data:`HCCL_OPS`
   (collectives on CPU tensors in :data:`GLOO_OPS`).
5. A stand-in ``torch_npu`` module in ``sys.modules`` so the product's guarded import succeeds.

Two workarounds beyond the reference recipe: autograd multithreading is switched off in the
installing thread (torch's Python PrivateUse1 device guard reports one device, and the autograd
engine asserts on a gradient for ``npu:1`` otherwise), and the device count defaults to
:data:`DEFAULT_DEVICE_COUNT` (override with the ``FAKE_NPU_DEVICE_COUNT`` environment variable).

:func:`install` does all of it. The rename and the registrations are process-global and one-shot,
so every test that calls :func:`install` runs in its own subprocess. What this cannot prove: NPU
numerics, real AMP casting, HCCL topology/timeouts, CANN versions, memory and speed.
"""

from __future__ import annotations

import collections
import os
import sys
import types
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.utils._pytree import tree_map

__all__ = [
    "DEVICE_COUNT_ENV",
    "DEVICE_NAME",
    "FakeNpuModule",
    "FakeNpuTensor",
    "GLOO_OPS",
    "HCCL_OPS",
    "HcclOverGloo",
    "install",
    "missing_private_apis",
]

#: Environment variable that sets how many fake NPUs exist (default :data:`DEFAULT_DEVICE_COUNT`).
DEVICE_COUNT_ENV = "FAKE_NPU_DEVICE_COUNT"
DEFAULT_DEVICE_COUNT = 8
DEVICE_NAME = "FakeAscend910B"
#: Collectives on fake npu tensors that went through the fake hccl, by name (``"allreduce"``, ``"broadcast"``...).
HCCL_OPS: collections.Counter[str] = collections.Counter()
#: Collectives on CPU tensors (and barriers) that the fake hccl group handed to gloo.
GLOO_OPS: collections.Counter[str] = collections.Counter()

_installed = False
_libs: list[torch.library.Library] = []  # keep the fallback registrations alive


def missing_private_apis() -> list[str]:
    """Names of the private torch APIs this emulation needs that this torch lacks (empty when all exist)."""
    from torch.utils import backend_registration

    needed = {
        "torch.utils.backend_registration._setup_privateuseone_for_python_backend": hasattr(
            backend_registration, "_setup_privateuseone_for_python_backend"
        ),
        "torch.utils.backend_registration._DummyBackendModule": hasattr(backend_registration, "_DummyBackendModule"),
        "torch.library.Library.fallback": hasattr(torch.library.Library, "fallback"),
        "torch.Tensor._make_wrapper_subclass": hasattr(torch.Tensor, "_make_wrapper_subclass"),
        "torch.distributed.ProcessGroupGloo": dist.is_available() and hasattr(dist, "ProcessGroupGloo"),
    }
    return [name for name, ok in needed.items() if not ok]


# ---------------------------------------------------------------------------------------------
# 1. device module
# ---------------------------------------------------------------------------------------------
def _dummy_backend_base() -> type:
    """torch's private dummy module (``object`` if it is gone: :func:`install` then refuses to run)."""
    from torch.utils import backend_registration

    return getattr(backend_registration, "_DummyBackendModule", object)


class FakeNpuModule(_dummy_backend_base()):  # type: ignore[misc]
    """What ``torch.npu`` offers here: the subset of ``torch_npu.npu`` that :mod:`pipeline.device` uses."""

    def __init__(self) -> None:
        self._current = 0
        self.seeds: list[int] = []

    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return int(os.environ.get(DEVICE_COUNT_ENV, DEFAULT_DEVICE_COUNT))

    def set_device(self, device: int | str | torch.device) -> None:
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if not 0 <= index < self.device_count():
            raise RuntimeError(f"fake npu: invalid device index {index} (device_count={self.device_count()})")
        self._current = index

    def current_device(self) -> int:
        return self._current

    def synchronize(self, device: Any = None) -> None:
        return None

    def get_amp_supported_dtype(self) -> list[torch.dtype]:
        return [torch.float16, torch.bfloat16]

    def is_bf16_supported(self) -> bool:
        return True

    def get_device_name(self, device: Any = None) -> str:
        return DEVICE_NAME

    def max_memory_allocated(self, device: Any = None) -> int:
        return 0

    def manual_seed(self, seed: int) -> None:
        self.seeds.append(int(seed))

    def manual_seed_all(self, seed: int) -> None:
        self.seeds.append(int(seed))


# ---------------------------------------------------------------------------------------------
# 2. wrapper tensor: device "npu:<i>", data on the CPU
# ---------------------------------------------------------------------------------------------
def _is_npu_device(value: Any) -> bool:
    return isinstance(value, torch.device) and value.type == "npu"


class FakeNpuTensor(torch.Tensor):
    """A tensor on ``npu:<index>`` whose storage is the CPU tensor ``raw``."""

    raw: torch.Tensor

    @staticmethod
    def __new__(cls, raw: torch.Tensor, index: int = 0) -> FakeNpuTensor:
        out = torch.Tensor._make_wrapper_subclass(
            cls,
            raw.shape,
            strides=raw.stride(),
            storage_offset=raw.storage_offset(),
            dtype=raw.dtype,
            layout=raw.layout,
            device=torch.device("npu", index),
            requires_grad=raw.requires_grad,
        )
        out.raw = raw
        return out

    def __repr__(self, *, tensor_contents: Any = None) -> str:  # type: ignore[override]
        return f"FakeNpuTensor({self.raw!r}, device='{self.device}')"

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        return _run_on_cpu(func, args, kwargs or {})


def _run_on_cpu(func: Any, args: tuple, kwargs: dict) -> Any:
    """Run ``func`` with npu tensors/devices replaced by their CPU counterparts; re-wrap outputs on npu."""
    index: list[int] = []
    wrappers: dict[int, FakeNpuTensor] = {}

    def unwrap(value: Any) -> Any:
        if isinstance(value, FakeNpuTensor):
            index.append(value.device.index or 0)
            wrappers[id(value.raw)] = value
            return value.raw
        if _is_npu_device(value):
            index.append(value.index if value.index is not None else torch.npu.current_device())
            return torch.device("cpu")
        return value

    target = kwargs.get("device")
    target = None if target is None else torch.device(target)
    to_cpu = target is not None and target.type == "cpu"
    out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
    if target is not None and target.type == "npu":  # an explicit destination wins (e.g. npu:0 -> npu:1)
        npu_index = target.index if target.index is not None else torch.npu.current_device()
    else:
        npu_index = index[0] if index else torch.npu.current_device()

    def wrap(value: Any) -> Any:
        if not isinstance(value, torch.Tensor) or isinstance(value, FakeNpuTensor):
            return value
        if id(value) in wrappers:  # in-place / out= ops return their (wrapped) argument
            return wrappers[id(value)]
        return value if to_cpu else FakeNpuTensor(value, npu_index)

    return tree_map(wrap, out)


# ---------------------------------------------------------------------------------------------
# 3. dispatcher fallbacks
# ---------------------------------------------------------------------------------------------
def _privateuse1_fallback(op: Any, *args: Any, **kwargs: Any) -> Any:
    return _run_on_cpu(op, args, kwargs)


# ---------------------------------------------------------------------------------------------
# 4. fake hccl: a process-group backend for "npu" tensors that forwards to gloo
# ---------------------------------------------------------------------------------------------
def _process_group_base() -> type:
    """``dist.ProcessGroup`` (``object`` on builds without torch.distributed: :func:`install` refuses)."""
    return dist.ProcessGroup if dist.is_available() else object


def _raw(tensors: Any) -> Any:
    return tree_map(lambda t: t.raw if isinstance(t, FakeNpuTensor) else t, tensors)


def _has_npu_tensor(tree: Any) -> bool:
    found: list[bool] = []
    tree_map(lambda t: found.append(isinstance(t, FakeNpuTensor)), tree)
    return any(found)


class HcclOverGloo(_process_group_base()):  # type: ignore[misc]
    """``"hccl"`` for fake npu tensors: each collective runs in gloo on the CPU ``raw`` tensors, in place.

    torch returns a Python ``ProcessGroup`` subclass as the whole group (``_new_process_group_helper``),
    so with ``"cpu:gloo,npu:hccl"`` this object also receives the CPU-tensor collectives that real
    torch_npu would route to gloo; it forwards those to gloo too and counts them in :data:`GLOO_OPS`.
    """

    def __init__(self, store: Any, rank: int, size: int, timeout: timedelta) -> None:
        super().__init__(rank, size)
        self._gloo = dist.ProcessGroupGloo(store, rank, size, timeout)

    def getBackendName(self) -> str:  # noqa: N802 (torch's name)
        return "hccl"

    def _forward(self, name: str, *args: Any) -> Any:
        (HCCL_OPS if _has_npu_tensor(args) else GLOO_OPS)[name] += 1
        return getattr(self._gloo, name)(*_raw(args))

    def allreduce(self, tensors: Any, opts: Any) -> Any:
        return self._forward("allreduce", tensors, opts)

    def allreduce_coalesced(self, tensors: Any, opts: Any) -> Any:
        return self._forward("allreduce_coalesced", tensors, opts)

    def broadcast(self, tensors: Any, opts: Any) -> Any:
        return self._forward("broadcast", tensors, opts)

    def allgather(self, outputs: Any, inputs: Any, opts: Any) -> Any:
        return self._forward("allgather", outputs, inputs, opts)

    def _allgather_base(self, output: Any, input: Any, opts: Any) -> Any:  # noqa: A002
        return self._forward("_allgather_base", output, input, opts)

    def reduce(self, tensors: Any, opts: Any) -> Any:
        return self._forward("reduce", tensors, opts)

    def gather(self, outputs: Any, inputs: Any, opts: Any) -> Any:
        return self._forward("gather", outputs, inputs, opts)

    def scatter(self, outputs: Any, inputs: Any, opts: Any) -> Any:
        return self._forward("scatter", outputs, inputs, opts)

    def reduce_scatter(self, outputs: Any, inputs: Any, opts: Any) -> Any:
        return self._forward("reduce_scatter", outputs, inputs, opts)

    def barrier(self, opts: Any = None) -> Any:
        GLOO_OPS["barrier"] += 1
        return self._gloo.barrier(opts if opts is not None else dist.BarrierOptions())


def _create_hccl(options: Any, pg_options: Any = None) -> HcclOverGloo:
    return HcclOverGloo(options.store, options.group_rank, options.group_size, options.timeout)


# ---------------------------------------------------------------------------------------------
# 5. the torch_npu stand-in, and everything together
# ---------------------------------------------------------------------------------------------
def install() -> None:
    """Install the fake NPU into this process (idempotent). Call it before using ``"npu"``.

    Raises:
        RuntimeError: if this torch lacks one of the private APIs (see :func:`missing_private_apis`)
            or PrivateUse1 was already renamed to something else.
    """
    global _installed
    if _installed:
        return
    missing = missing_private_apis()
    if missing:
        raise RuntimeError(f"fake npu needs private torch APIs missing from torch {torch.__version__}: {missing}")
    from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

    _setup_privateuseone_for_python_backend(rename="npu", backend_module=FakeNpuModule())
    lib = torch.library.Library("_", "IMPL")
    lib.fallback(_privateuse1_fallback, dispatch_key="PrivateUse1")
    lib.fallback(torch.library.fallthrough_kernel, dispatch_key="AutocastPrivateUse1")
    _libs.append(lib)
    # The autograd engine keeps one ready queue per device index, sized by the device guard's
    # deviceCount(), which torch's Python PrivateUse1 guard hard-codes to 1: backward on "npu:1"
    # would hit an internal assert. With multithreading off, backward runs every node on the
    # calling thread's CPU queue, whatever the device index (thread-local: the main thread here).
    torch.autograd.set_multithreading_enabled(False)
    dist.Backend.register_backend("hccl", _create_hccl, extended_api=True, devices=["npu"])
    stub = types.ModuleType("torch_npu")
    stub.__doc__ = "Stand-in for torch_npu installed by tests/fake_npu.py."
    stub.npu = torch.npu  # type: ignore[attr-defined]
    sys.modules["torch_npu"] = stub
    _installed = True


def parse_results(text: str, prefix: str) -> list:
    """Every JSON object printed after ``prefix`` in ``text``.

    Ranks under torchrun share one stdout, and ``print`` writes the text and its newline separately, so two
    ranks' lines can end up on one line; decoding from each prefix keeps them apart.
    """
    import json

    decoder, out, i = json.JSONDecoder(), [], text.find(prefix)
    while i != -1:
        obj, end = decoder.raw_decode(text, i + len(prefix))
        out.append(obj)
        i = text.find(prefix, end)
    return out
