"""Prediction in the original MA-SAM's convention (``MA-SAM/test.py``), streamed.

Every slice is the centre of a stack; each stack is windowed, turned into the original's
orientation, min-max scaled on its own, resized by cubic spline, run, and its softmax resized
back (cubic) and turned back; the probabilities of the stacks covering a slice are summed and the
argmax taken (test.py:39-66; the original divides by a count that starts at 1, which does not
change the argmax). Slices are finished as soon as their last stack has run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..data.convention import ORIGINAL_CT, original_stack, restore_original, window_ct
from ..spec import SLICES

Forward = Callable[[torch.Tensor], torch.Tensor]


def predict_original(
    forward: Forward,
    volume: np.ndarray,
    image_size: int,
    *,
    slices: int = SLICES,
    batch_size: int = 1,
    window: tuple[float, float] = ORIGINAL_CT["window"],
    mean: float = ORIGINAL_CT["mean"],
    std: float = ORIGINAL_CT["std"],
) -> np.ndarray:
    """Label map ``[z, y, x]`` (uint8) of a CT ``[z, y, x]`` in HU, in the input's own orientation.

    ``forward``: stacks ``[B, slices, 3, S, S]`` float32 -> softmax probabilities
    ``[B, slices, K+1, S, S]`` (e.g. ``Predictor.forward_stacks(stacks, None)``).
    """
    n, rows, cols = volume.shape
    windowed = window_ct(volume, window, mean, std)
    half = slices // 2
    labels = np.zeros((n, rows, cols), np.uint8)
    sums: dict[int, np.ndarray] = {}
    done = 0
    for start in range(0, n, batch_size):
        centres = list(range(start, min(start + batch_size, n)))
        batch = np.stack([original_stack(windowed, c, image_size, slices) for c in centres])
        stacks = torch.from_numpy(batch)[:, :, None].expand(-1, -1, 3, -1, -1)
        with torch.no_grad():
            probs = forward(stacks).float().cpu().numpy()
        for b, centre in enumerate(centres):
            restored = restore_original(probs[b], (rows, cols))
            for pos in range(slices):
                target = centre - half + pos
                if 0 <= target < n:  # positions repeating an end slice fall outside (test.py:36, 67)
                    sums[target] = sums[target] + restored[pos] if target in sums else restored[pos].copy()
        finished = n if centres[-1] == n - 1 else centres[-1] - half + 1
        while done < finished:
            labels[done] = sums.pop(done).argmax(0)
            done += 1
    return labels
