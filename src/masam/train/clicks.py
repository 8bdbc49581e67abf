"""Simulated clicks (issue 22): the first click inside the target away from its border, and each
next click in the largest error region of the current prediction, at its point farthest from the
region's border (a false negative gives an include click, a false positive an exclude click).

These are the anchors' recipe for training interactive models (SAM; RITM's and SAM-Med3D's
"largest error, farthest from its border" click; VISTA3D), and the simulated user of
``benchmarks/interactive.py``. Clicks are per slice: MA-SAM's decoder works slice by slice."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

# The first include click is drawn among the target's pixels at least this share of the target's
# largest distance to its border away from it: inside, not on the edge, not always the centre.
FIRST_CLICK_DEPTH = 0.5


def border_distance(region: np.ndarray) -> np.ndarray:
    """Euclidean distance (in pixels) of each pixel of ``region`` (any dimension) to the nearest
    pixel outside it, the image's edge counting as outside (0 outside the region)."""
    padded = np.pad(region, 1)
    return ndimage.distance_transform_edt(padded)[(slice(1, -1),) * region.ndim]


def first_click(target: np.ndarray, rng: np.random.Generator) -> tuple[float, float, int]:
    """``(x, y, label)`` on one slice ``[H, W]``: an include click drawn uniformly among the
    target's pixels at least :data:`FIRST_CLICK_DEPTH` of its deepest pixel's distance from its
    border; an exclude click anywhere on a slice without the target."""
    if not target.any():
        h, w = target.shape
        return float(rng.integers(w)), float(rng.integers(h)), 0
    depth = border_distance(target)
    rows, cols = np.nonzero(depth >= FIRST_CLICK_DEPTH * depth.max())
    pick = rng.integers(len(rows))
    return float(cols[pick]), float(rows[pick]), 1


def largest_error_point(prediction: np.ndarray, target: np.ndarray) -> tuple[tuple[int, ...], int] | None:
    """``(index, label)``: the point of the largest connected error region (where ``prediction``
    and ``target`` bool arrays of any dimension differ; face-connected) farthest from that
    region's border (the first such point in C order), and 1 where the target was missed there,
    0 where the prediction is wrong. None when there is no error."""
    error = prediction != target
    if not error.any():
        return None
    regions, count = ndimage.label(error)
    sizes = np.bincount(regions.ravel(), minlength=count + 1)
    sizes[0] = 0
    largest = regions == int(sizes.argmax())
    depth = border_distance(largest)
    index = tuple(int(i) for i in np.unravel_index(int(depth.argmax()), depth.shape))
    return index, int(target[index])


def correction_click(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float, int] | None:
    """``(x, y, label)`` on one slice ``[H, W]``: :func:`largest_error_point` (None: no error)."""
    found = largest_error_point(prediction, target)
    if found is None:
        return None
    (row, col), label = found
    return float(col), float(row), label


def next_click(prediction: np.ndarray, target: np.ndarray, rng: np.random.Generator) -> tuple[float, float, int]:
    """:func:`correction_click`, or where the slice holds no error, another first click (so that
    every slice gets one click a round)."""
    click = correction_click(prediction, target)
    return click if click is not None else first_click(target, rng)


class SimulatedClicks:
    """Correction rounds for one training batch (what :meth:`MASAM.forward` takes as
    ``correction``): ``rounds`` decoder rounds; ``first()`` the points of round 0 (the first click
    on every slice of the prompted samples, or None when round 0 is a box); ``next(logits)`` one
    more click per slice from round ``r``'s logits ``[B, D, K+1, S, S]``; ``label`` the target's
    class (None: all foreground), as the mask prompt reads it.

    ``target`` ``[B, D, H, W]`` bool; ``prompted`` ``[B]`` bool: samples with a prompt in round 0
    (the others start automatic and are corrected from there)."""

    def __init__(
        self,
        target: torch.Tensor,
        rounds: int,
        label: int | None,
        prompted: torch.Tensor | None,
        first_points: bool,
        rng: np.random.Generator,
    ) -> None:
        self.target = target.cpu().numpy().astype(bool)
        self.rounds = rounds
        self.label = label
        self.prompted = np.ones(target.shape[0], bool) if prompted is None else prompted.cpu().numpy()
        self.first_points = first_points
        self.rng = rng
        self.device = target.device

    def _tensor(self, clicks: list) -> torch.Tensor:
        """``[B, D, 1, 3]`` from nested lists of ``(x, y, label)`` (None: no click, label -1)."""
        b, d = self.target.shape[:2]
        out = torch.full((b, d, 1, 3), -1.0)
        for i in range(b):
            for j in range(d):
                if clicks[i][j] is not None:
                    out[i, j, 0] = torch.tensor(clicks[i][j], dtype=torch.float32)
        return out.to(self.device)

    def first(self) -> torch.Tensor | None:
        if not self.first_points:
            return None
        clicks = [
            [first_click(t, self.rng) if self.prompted[i] else None for t in sample]
            for i, sample in enumerate(self.target)
        ]
        return self._tensor(clicks)

    def next(self, logits: torch.Tensor) -> torch.Tensor:
        classes = logits.argmax(2)
        predicted = (classes > 0 if self.label is None else classes == self.label).cpu().numpy()
        clicks = [
            [next_click(p, t, self.rng) for p, t in zip(ps, ts, strict=True)]
            for ps, ts in zip(predicted, self.target, strict=True)
        ]
        return self._tensor(clicks)
