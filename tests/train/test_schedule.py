"""The learning-rate schedule: warm-up, then the original's polynomial decay."""

from __future__ import annotations

import pytest

from masam.train.schedule import lr_at


def test_learning_rate_schedule_is_the_originals():
    assert lr_at(0, 8e-4, 250, 7, 10_000) == pytest.approx(8e-4 / 250)
    assert lr_at(249, 8e-4, 250, 7, 10_000) == pytest.approx(8e-4)
    assert lr_at(250, 8e-4, 250, 7, 10_000) == pytest.approx(8e-4)
    assert lr_at(5250, 8e-4, 250, 7, 10_000) == pytest.approx(8e-4 * 0.5**7)
    assert lr_at(20_000, 8e-4, 250, 7, 10_000) == 0.0
