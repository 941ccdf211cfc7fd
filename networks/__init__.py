"""V-Net network and weight conversion."""

from __future__ import annotations

from networks.convert import monai_vnet_to_ours
from networks.vnet import VNet

__all__ = ["VNet", "monai_vnet_to_ours"]
