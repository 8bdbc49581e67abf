"""Stacks of neighbouring slices (masam.data.slices)."""

from __future__ import annotations

from masam.data.slices import stack_indices


def test_stack_indices_repeat_the_ends():
    assert stack_indices(10, 0).tolist() == [0, 0, 0, 1, 2]
    assert stack_indices(10, 9).tolist() == [7, 8, 9, 9, 9]
    assert stack_indices(1, 0).tolist() == [0] * 5
    assert stack_indices(10, 4, slices=3).tolist() == [3, 4, 5]
