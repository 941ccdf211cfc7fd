"""V-Net network, weight conversion, and evaluation with batch statistics as the reference does."""

from __future__ import annotations

from networks.batch_norm import batch_statistics
from networks.convert import monai_vnet_to_ours
from networks.vnet import VNet

__all__ = ["VNet", "batch_statistics", "monai_vnet_to_ours"]
