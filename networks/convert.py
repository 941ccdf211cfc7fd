"""State-dict conversion from MONAI's ``VNet`` to :class:`networks.VNet`.

Kept apart from ``vnet.py`` so that module stays "one file, one public class".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

__all__ = ["monai_vnet_to_ours"]

DATA_PARALLEL_PREFIX = "module."  # added by DataParallel / DistributedDataParallel when saving the wrapper
# MONAI name -> ours (= the reference's): applied in order to every key.
_RENAMES = (
    (re.compile(r"\.conv_block\.conv\."), ".conv1."),
    (re.compile(r"\.conv_block\.adn\.N\."), ".bn1."),
    (re.compile(r"\.act_function1\."), ".relu1."),
    (re.compile(r"\.act_function2\."), ".relu2."),
    (re.compile(r"\.act_function\."), ".relu1."),
)
# MONAI never gives the 5^d convs of the up path a bias (even with bias=True); ours has one when bias=True.
_UP_CONV_WEIGHT = re.compile(r"^(up_tr\d+\.ops\.\d+\.conv1)\.weight$")
_BIAS_PROBE = "in_tr.conv1.bias"  # present iff the MONAI model was built with bias=True


def monai_vnet_to_ours(
    state_dict: Mapping[str, torch.Tensor], fill_missing_bias: bool | None = None
) -> dict[str, torch.Tensor]:
    """Map a ``monai.networks.nets.VNet`` state dict onto :class:`networks.VNet` parameter names.

    MONAI 1.6 and ours have the same layers (same stages, widths, conv counts, residuals); only the names differ
    (``conv_block.conv`` -> ``conv1``, ``conv_block.adn.N`` -> ``bn1``, ``act_function[1|2]`` -> ``relu1|2``), and
    MONAI's up-path 5^d convs have no bias. Those missing biases are filled with zeros, which leaves the function
    unchanged, so ``VNet(bias=True).load_state_dict(monai_vnet_to_ours(sd))`` is strict-clean for a MONAI
    ``VNet(..., bias=True)``; for MONAI ``bias=False`` load into ``VNet(bias=False)`` (nothing is filled).
    A ``module.`` prefix (DataParallel / DDP checkpoints) is removed. Tensors are shared, not copied.

    Args:
        state_dict: MONAI ``VNet`` state dict (any ``act`` / ``norm``; MONAI always uses batch norm).
        fill_missing_bias: add zero up-path conv biases. None (default): only when the source has conv biases
            elsewhere (it was built with ``bias=True``).

    Returns:
        A new dict keyed by our names.

    Example::

        from monai.networks.nets import VNet as MonaiVNet
        from networks import VNet, monai_vnet_to_ours

        src = MonaiVNet(spatial_dims=3, in_channels=1, out_channels=2, act="prelu", bias=True)
        ours = VNet()
        ours.load_state_dict(monai_vnet_to_ours(src.state_dict()))
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(DATA_PARALLEL_PREFIX):
            key = key[len(DATA_PARALLEL_PREFIX):]
        for pattern, new in _RENAMES:
            key = pattern.sub(new, key)
        out[key] = value
    if fill_missing_bias is None:
        fill_missing_bias = _BIAS_PROBE in out
    if fill_missing_bias:
        for key in list(out):
            match = _UP_CONV_WEIGHT.match(key)
            bias_key = f"{match.group(1)}.bias" if match else ""
            if match and bias_key not in out:
                weight = out[key]
                out[bias_key] = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return out
