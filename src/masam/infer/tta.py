"""Test-time mirroring: the probabilities averaged over flipped copies of the input.

A volume is ``[S, C, H, W]`` (slices, channels, rows, columns), normalised; a probability
function maps it to ``[S, K, H, W]``. Each mirror flips the input, runs the function and flips
the result back, so every average is taken in the input's own frame. The in-plane mirrors are
rows (H), columns (W) and both; the slice-axis mirror reverses the slice order, which a model
with 3D adapters sees as a different input (its stacks run the other way). With it, all 8
combinations are used, as nnU-Net mirrors every axis of a 3D patch.

The average is over a group of flips, so the mirrored function is equivariant: a flipped input
gives the flipped prediction, whatever the model does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import torch

ProbsFn = Callable[[torch.Tensor], torch.Tensor]

SLICE_DIM, ROW_DIM, COL_DIM = 0, 2, 3  # in [S, C, H, W] and [S, K, H, W] alike


def mirror_axes(slice_flip: bool = True) -> list[tuple[int, ...]]:
    """The flips to average, as dimension tuples (``()`` is the input as it is): 4 in-plane, 8
    with the slice-axis flip."""
    dims = [ROW_DIM, COL_DIM] + ([SLICE_DIM] if slice_flip else [])
    return [tuple(sorted(c)) for r in range(len(dims) + 1) for c in combinations(dims, r)]


def mirrored_probabilities(
    probs_fn: ProbsFn, volume: torch.Tensor, axes: Sequence[tuple[int, ...]] | None = None
) -> torch.Tensor:
    """Mean of ``flip(probs_fn(flip(volume)))`` over ``axes`` (default: :func:`mirror_axes`).

    ``volume`` ``[S, C, H, W]``; returns ``[S, K, H, W]`` float32. Runs ``probs_fn`` once per flip
    and keeps one running sum, so memory is two probability volumes whatever the count.
    """
    if volume.ndim != 4:
        raise ValueError(f"expected a volume [slices, channels, H, W], got shape {tuple(volume.shape)}")
    axes = mirror_axes() if axes is None else list(axes)
    if not axes:
        raise ValueError("no mirror axes given")
    total = None
    for dims in axes:
        flipped = volume.flip(dims) if dims else volume
        probs = probs_fn(flipped).float()
        if probs.ndim != 4 or probs.shape[0] != volume.shape[0] or probs.shape[2:] != volume.shape[2:]:
            raise ValueError(
                f"the probability function returned shape {tuple(probs.shape)} for input {tuple(volume.shape)}; "
                "expected [slices, classes, H, W]"
            )
        probs = probs.flip(dims) if dims else probs
        total = probs.clone() if total is None else total.add_(probs)
    return total / len(axes)


def mirrored(probs_fn: ProbsFn, slice_flip: bool = True) -> ProbsFn:
    """``probs_fn`` with test-time mirroring: a function of the same signature."""
    axes = mirror_axes(slice_flip)

    def run(volume: torch.Tensor) -> torch.Tensor:
        return mirrored_probabilities(probs_fn, volume, axes)

    return run
