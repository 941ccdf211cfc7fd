"""Inference-time folding of BatchNorm into the convolution before it (same function, one pass less per layer)."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = ["fold_batch_norms"]

#: in every block of :class:`networks.VNet` the norm ``bn1`` directly follows one of these convolutions
CONVS_BEFORE_NORM = ("conv1", "down_conv", "up_conv")
NORM_NAME = "bn1"


def fold_batch_norms(network: nn.Module, inplace: bool = False) -> nn.Module:
    """``network`` (a copy unless ``inplace``) in eval mode with its BatchNorms folded into the preceding convolutions.

    In eval mode BatchNorm is a per-channel affine map ``y = (x - mean) / sqrt(var + eps) * gamma + beta``; applied
    to a convolution's output it equals the same convolution with rescaled weights and a shifted bias
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``). Outputs agree to float rounding (~1e-5 relative in fp32);
    each BatchNorm becomes ``nn.Identity``, saving one full read and write of every normalised activation (~4 %
    of a reference-width V-Net's CPU inference, ``benchmarks/NOTES.md``).

    Blocks are recognised by the layout of :class:`networks.VNet` (a ``bn1`` after ``conv1``, ``down_conv`` or
    ``up_conv``); other modules, and norms that are not BatchNorm with running statistics, are left as they are.

    Args:
        network: a network.
        inplace: fold ``network`` itself instead of a copy (saves the copy's memory).

    Returns:
        The folded network, in eval mode (never train it: its BatchNorms are gone).
    """
    folded = (network if inplace else copy.deepcopy(network)).eval()
    for module in folded.modules():
        norm = getattr(module, NORM_NAME, None)
        if not isinstance(norm, nn.modules.batchnorm._BatchNorm) or not norm.track_running_stats:
            continue
        for name in CONVS_BEFORE_NORM:
            conv = getattr(module, name, None)
            if isinstance(conv, nn.modules.conv._ConvNd):
                transpose = isinstance(conv, nn.modules.conv._ConvTransposeNd)
                setattr(module, name, fuse_conv_bn_eval(conv, norm, transpose=transpose))
                setattr(module, NORM_NAME, nn.Identity())
                break
    return folded
