"""The loss of the original recipe: soft Dice plus cross-entropy."""

from __future__ import annotations

import pytest
import torch

from masam.train.losses import segmentation_loss, soft_dice_loss


def test_soft_dice_and_ce_against_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, 6, generator=g)  # [B, D, C, H, W]
    target = torch.randint(0, 4, (2, 3, 5, 6), generator=g)
    p = torch.softmax(logits, dim=2)
    per_class = []
    for c in range(4):
        t = (target == c).float()
        pc = p[:, :, c]
        per_class.append(1 - (2 * (pc * t).sum() + 1e-5) / ((pc * pc).sum() + (t * t).sum() + 1e-5))
    expected_dice = sum(per_class) / 4
    log_p = torch.log_softmax(logits, dim=2)
    expected_ce = -log_p.gather(2, target[:, :, None]).mean()
    loss, ce, dice = segmentation_loss(logits, target)
    assert dice.item() == pytest.approx(expected_dice.item(), rel=1e-5)
    assert ce.item() == pytest.approx(expected_ce.item(), rel=1e-5)
    assert loss.item() == pytest.approx(0.2 * expected_ce.item() + 0.8 * expected_dice.item(), rel=1e-5)
    without_bg = soft_dice_loss(logits.flatten(0, 1), target.flatten(0, 1), include_background=False)
    assert without_bg.item() == pytest.approx((sum(per_class[1:]) / 3).item(), rel=1e-5)


def test_perfect_prediction_has_near_zero_dice_loss():
    target = torch.randint(0, 3, (4, 8, 8))
    logits = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    assert soft_dice_loss(logits, target).item() < 1e-4
