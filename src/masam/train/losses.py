"""The paper's loss: 0.2 x cross-entropy + 0.8 x soft Dice over the classes."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    include_background: bool = True,
    smooth: float = 1e-5,
    reduce_sums=None,
):
    """Mean over classes of ``1 - (2 sum(p t) + eps) / (sum(p^2) + sum(t^2) + eps)``, summed over the
    whole batch (the squared-sum form the original code uses). ``logits`` ``[N, C, H, W]``,
    ``target`` ``[N, H, W]``. ``reduce_sums``: under DDP, an autograd-aware all-reduce, so that every
    rank computes the Dice of the global batch (the batch Dice is not a mean of per-sample terms)."""
    probs = torch.softmax(logits.float(), dim=1)
    onehot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersect = (probs * onehot).sum(dims)
    denom = probs.square().sum(dims) + onehot.square().sum(dims)
    if reduce_sums is not None:
        intersect, denom = reduce_sums(intersect), reduce_sums(denom)
    per_class = 1 - (2 * intersect + smooth) / (denom + smooth)
    if not include_background:
        per_class = per_class[1:]
    return per_class.mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    dice_weight: float = 0.8,
    include_background: bool = True,
    reduce_sums=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, CE, Dice) for logits ``[B, D, C, H, W]`` and labels ``[B, D, H, W]`` (every slice)."""
    flat_logits = logits.flatten(0, 1)
    flat_target = target.flatten(0, 1).long()
    ce = F.cross_entropy(flat_logits.float(), flat_target)
    dice = soft_dice_loss(flat_logits, flat_target, include_background, reduce_sums=reduce_sums)
    return (1 - dice_weight) * ce + dice_weight * dice, ce, dice
