"""Shared pytest configuration: hardware markers.

``@pytest.mark.npu`` tests run only where :func:`pipeline.device.ensure_npu_backend` loads torch_npu
and ``torch.npu.is_available()``; ``@pytest.mark.cuda`` tests only where ``torch.cuda.is_available()``.
Elsewhere they are skipped with the reason. Availability is checked once, and only if such tests
were collected (so a plain run never tries to import torch_npu).
"""

from __future__ import annotations

import pytest

__all__ = ["pytest_collection_modifyitems"]


def _npu_available() -> bool:
    import torch

    from pipeline.device import ensure_npu_backend

    return ensure_npu_backend() and torch.npu.is_available()


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


_HARDWARE_MARKERS = {
    "npu": (_npu_available, "needs an Ascend NPU (torch_npu loadable and torch.npu.is_available())"),
    "cuda": (_cuda_available, "needs a CUDA GPU (torch.cuda.is_available())"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip hardware-marked tests when that hardware is missing."""
    for marker, (available, reason) in _HARDWARE_MARKERS.items():
        marked = [item for item in items if item.get_closest_marker(marker) is not None]
        if marked and not available():
            for item in marked:
                item.add_marker(pytest.mark.skip(reason=reason))
