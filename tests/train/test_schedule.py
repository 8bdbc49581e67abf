"""The learning-rate schedule: warm-up, then the original's polynomial decay."""

from __future__ import annotations

import pytest

from masam.train.schedule import lr_at


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
