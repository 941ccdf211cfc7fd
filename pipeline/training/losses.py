"""Training losses: the reference's class-weighted cross-entropy, and MONAI's Dice variants.

``make_loss("ce", weights)`` is identical to the reference's weighted NLL on log-softmax, with the reference's
class weights computed from the training samples by :func:`reference_class_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.losses import DiceCELoss, DiceLoss

from pipeline.data.datasets import FlattenedDataset

__all__ = ["LOSS_CHOICES", "make_loss", "reference_class_weights"]


def reference_class_weights(dataset: FlattenedDataset, parts_per_volume: int = 8) -> list[float]:
    """The reference's NLL class weights: [m / (1 + m), 1 / (1 + m)].

    m is the mean, over the kept (volume, octant) samples, of the foreground fraction of the sample's
    whole volume (docs/reference.md). Dropped octants hold no foreground, so a volume's fraction is the
    foreground of its kept samples over ``parts_per_volume`` x the sample size.

    Args:
        dataset: the training samples.
        parts_per_volume: samples a volume was cut into before empty ones were dropped (2x2x2 = 8).

    Returns:
        ``[w_background, w_foreground]``.
    """
    if not dataset.foreground:
        raise ValueError("the training dataset has no labelled samples: cannot compute class weights")
    fg_per_volume: dict[int, float] = {}
    size_per_volume: dict[int, int] = {}
    for k, (fg, vox) in enumerate(zip(dataset.foreground, dataset.voxels)):
        v = dataset.volume_of(k)
        fg_per_volume[v] = fg_per_volume.get(v, 0.0) + fg
        size_per_volume[v] = vox * parts_per_volume
    volumes = [dataset.volume_of(k) for k in range(len(dataset))]
    fractions = [fg_per_volume[v] / size_per_volume[v] for v in volumes]
    m = float(np.mean(fractions))
    return [m / (1.0 + m), 1.0 / (1.0 + m)]


#: ``ce``: weighted cross-entropy (the reference); ``dice`` / ``dice_squared``: soft Dice; ``dicece``: Dice + CE
LOSS_CHOICES = ("ce", "dice", "dice_squared", "dicece")


def make_loss(name: str = "ce", weight: Sequence[float] | None = None) -> torch.nn.Module:
    """The training loss on logits (N, 2, *spatial) and labels (N, 1, *spatial).

    With p the softmax foreground probability and g the 0/1 label, sums over the voxels of one sample:

    Args:
        name: ``"ce"``: class-weighted cross-entropy, identical to the reference's weighted NLL on
            log-softmax; ``"dice"``: MONAI's ``DiceLoss``, 1 - 2 sum(p g) / (sum(p) + sum(g)) per sample, foreground
            only, averaged over the batch; ``"dice_squared"``: the V-Net paper's Dice, squares in the denominator,
            1 - 2 sum(p g) / (sum(p^2) + sum(g^2)) (``DiceLoss(squared_pred=True)``); ``"dicece"``: ``"dice"`` plus
            the weighted cross-entropy. The Dice terms carry MONAI's 1e-5 smoothing in numerator and denominator.
        weight: class weights for the cross-entropy term (``[w_bg, w_fg]``); unused by the Dice-only losses.

    Raises:
        ValueError: unknown name.
    """
    w = torch.as_tensor(weight, dtype=torch.float32) if weight is not None else None
    if name == "ce":
        return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.0, lambda_ce=1.0, weight=w)
    if name in ("dice", "dice_squared"):
        return DiceLoss(to_onehot_y=True, softmax=True, include_background=False, squared_pred=name == "dice_squared")
    if name == "dicece":
        return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, weight=w)
    raise ValueError(f"loss must be one of {LOSS_CHOICES}, got {name!r}")
