"""Loss and schedule numbers against direct computations."""

from __future__ import annotations

import math

import pytest
import torch

from masam.train import lr_at, segmentation_loss, soft_dice_loss
from masam.train.trainer import EpochSampler, boxes_for_training


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


def _original_rates(steps: int, base: float, warmup: int, power: float, max_iterations: int) -> list[float]:
    """The rate each step runs at in the original's loop (trainer.py:60-113): set before the loop,
    then after each step."""
    lr, rates = base / warmup, []
    for iter_num in range(steps):
        rates.append(lr)
        if iter_num < warmup:
            lr = base * ((iter_num + 1) / warmup)
        else:
            lr = base * (1.0 - (iter_num - warmup) / max_iterations) ** power
    return rates


def test_learning_rate_schedule_is_the_originals():
    """Issue 24: step for step, the one-step lag included (step 0 and 1 both run at base / 250)."""
    expected = _original_rates(1300, 8e-4, 250, 7, 1000)
    assert [lr_at(s, 8e-4, 250, 7, 1000) for s in range(1300)] == pytest.approx(expected)
    assert lr_at(0, 8e-4, 250, 7, 10_000) == lr_at(1, 8e-4, 250, 7, 10_000) == pytest.approx(8e-4 / 250)
    assert lr_at(250, 8e-4, 250, 7, 10_000) == lr_at(251, 8e-4, 250, 7, 10_000) == pytest.approx(8e-4)
    assert lr_at(5251, 8e-4, 250, 7, 10_000) == pytest.approx(8e-4 * 0.5**7)
    assert lr_at(20_000, 8e-4, 250, 7, 10_000) == 0.0
    assert lr_at(0, 1e-3, 0, 1.0, 10) == lr_at(1, 1e-3, 0, 1.0, 10) == 1e-3  # no warm-up


def test_epoch_sampler_deals_one_permutation_to_the_ranks():
    whole = EpochSampler(10, seed=3, epoch=2).indices
    assert sorted(whole) == list(range(10))
    r0, r1 = EpochSampler(10, 3, 2, ddp_rank=0, world=2).indices, EpochSampler(10, 3, 2, ddp_rank=1, world=2).indices
    assert r0 == whole[0::2] and r1 == whole[1::2]
    assert EpochSampler(10, 3, 2, start=4).indices == whole[4:]
    assert EpochSampler(10, 3, 3).indices != whole
    assert len(EpochSampler(5, 0, 0, ddp_rank=1, world=2)) == 3  # padded to a multiple of the world size


def test_training_boxes_surround_the_foreground_with_bounded_jitter():
    label = torch.zeros(1, 2, 40, 40, dtype=torch.long)
    label[0, 0, 10:20, 5:25] = 1
    boxes = boxes_for_training(label, torch.Generator().manual_seed(0), jitter=0.1)
    assert torch.isnan(boxes[0, 1]).all()  # no target: no box
    x0, y0, x1, y1 = boxes[0, 0].tolist()
    assert abs(x0 - 5) <= 2 and abs(x1 - 24) <= 2 and abs(y0 - 10) <= 1 and abs(y1 - 19) <= 1
    assert not math.isclose(x0, 5.0) or not math.isclose(y0, 10.0)
