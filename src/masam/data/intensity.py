"""A small summary of the normalised intensities a model saw in training, stored in its input spec
(``InputSpec.intensity``), and the check at prediction time that an input is not far outside it
(issue 18: a CT model run on an MR image must not pass in silence).

The summary: the voxel mean and standard deviation over the training stacks, and the lowest and
highest per-case mean. An input is reported when its mean lies more than ``MEAN_MARGIN`` training
standard deviations outside the per-case range, or its standard deviation differs by more than a
factor ``STD_FACTOR``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

MEAN_MARGIN = 0.5
STD_FACTOR = 2.0
EVERY = 4  # slices sampled per case for the summary (every 4th: enough for a mean, fast on large caches)


def intensity_summary(cases: Iterable[np.ndarray]) -> dict[str, float] | None:
    """Summary of normalised slices, one array ``[S, C, H, W]`` (any float dtype) per case; None without cases."""
    means, sums, squares, count = [], 0.0, 0.0, 0
    for array in cases:
        sample = np.asarray(array[::EVERY], dtype=np.float64)
        means.append(float(sample.mean()))
        sums += float(sample.sum())
        squares += float(np.square(sample).sum())
        count += sample.size
    if not count:
        return None
    mean = sums / count
    std = float(np.sqrt(max(squares / count - mean * mean, 0.0)))
    return {"mean": mean, "std": std, "case_mean_min": min(means), "case_mean_max": max(means)}


def intensity_warning(slices: np.ndarray, summary: dict | None) -> str | None:
    """One sentence when normalised ``slices`` (``[S, C, H, W]``) lie far outside ``summary``; else None."""
    if not summary:
        return None
    sample = np.asarray(slices, dtype=np.float64)
    mean, std = float(sample.mean()), float(sample.std())
    margin = MEAN_MARGIN * summary["std"]
    low, high = summary["case_mean_min"] - margin, summary["case_mean_max"] + margin
    ratio = std / summary["std"] if summary["std"] > 0 else 1.0
    if low <= mean <= high and 1 / STD_FACTOR <= ratio <= STD_FACTOR:
        return None
    return (
        f"normalised intensities (mean {mean:.3g}, std {std:.3g}) far from the training data's "
        f"(case means {summary['case_mean_min']:.3g} to {summary['case_mean_max']:.3g}, std {summary['std']:.3g}): "
        f"another modality or protocol? the result is doubtful"
    )
