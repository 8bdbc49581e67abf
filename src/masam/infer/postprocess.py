"""Connected-component post-processing, chosen per class on cross-validation results.

``keep_largest_component`` sets to background every component of a class but its largest
(26-connectivity in 3D, 8 in 2D: voxels touching by a corner are one component, as in MONAI's
``KeepLargestConnectedComponent`` and nnU-Net). ``choose_postprocessing`` keeps it for a class
only where it raises that class's mean Dice over the cross-validation cases, nnU-Net's per-class
rule (``determine_postprocessing``). Removing voxels of one class only ever turns them into
background, so the classes do not interact and each is decided on the raw predictions.

The decision is stored as JSON beside the model (:func:`write_postprocessing`), e.g.
``{"keep_largest_component": {"1": true, "2": false}, "mean_dice": {...}}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..eval.metrics import dice
from ..fileio import atomic_path


class PostprocessingError(ValueError):
    """A post-processing file or input that cannot be used; the message names it."""


def keep_largest_component(labels: np.ndarray, classes: Iterable[int]) -> np.ndarray:
    """A copy of ``labels`` (any shape, integer classes) where each class in ``classes`` keeps only
    its largest connected component; the other components become background (0)."""
    out = labels.copy()
    structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)  # full connectivity
    for c in classes:
        mask = labels == c
        components, count = ndimage.label(mask, structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())[1:]
        out[mask & (components != 1 + int(np.argmax(sizes)))] = 0
    return out


def postprocessing_gains(
    pred_arrays: Sequence[np.ndarray], ref_arrays: Sequence[np.ndarray], classes: Iterable[int]
) -> dict[int, dict[str, float]]:
    """Per class, the mean Dice over the cases before and after keeping its largest component:
    ``{class: {"before": d0, "after": d1}}``. Cases where the class is absent in both count as
    Dice 1 (:func:`masam.eval.metrics.dice`)."""
    if len(pred_arrays) != len(ref_arrays) or not pred_arrays:
        raise PostprocessingError(f"need as many predictions as references, at least one: got "
                                  f"{len(pred_arrays)} and {len(ref_arrays)}")  # fmt: skip
    gains = {}
    for c in classes:
        before, after = [], []
        for pred, ref in zip(pred_arrays, ref_arrays):
            if pred.shape != ref.shape:
                raise PostprocessingError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
            before.append(dice(pred == c, ref == c))
            after.append(dice(keep_largest_component(pred, [c]) == c, ref == c))
        gains[int(c)] = {"before": float(np.mean(before)), "after": float(np.mean(after))}
    return gains


def choose_postprocessing(
    pred_arrays: Sequence[np.ndarray], ref_arrays: Sequence[np.ndarray], classes: Iterable[int]
) -> dict[int, bool]:
    """``{class: keep largest component?}``: True only where it strictly raises the class's mean Dice
    over the cases (the validation predictions of all folds against their references)."""
    gains = postprocessing_gains(pred_arrays, ref_arrays, classes)
    return {c: g["after"] > g["before"] for c, g in gains.items()}


def apply_postprocessing(labels: np.ndarray, decision: Mapping[int | str, bool]) -> np.ndarray:
    """``labels`` with the largest-component rule applied to the classes ``decision`` marks True
    (keys as ints or, read back from JSON, strings)."""
    chosen = [int(c) for c, keep in decision.items() if keep]
    return keep_largest_component(labels, chosen) if chosen else labels


def write_postprocessing(
    path: str | os.PathLike, decision: Mapping[int, bool], gains: Mapping[int, Mapping[str, float]] | None = None
) -> Path:
    """Store ``decision`` (and the Dice it was based on) as JSON, atomically."""
    path = Path(path)
    record: dict = {"keep_largest_component": {str(c): bool(v) for c, v in decision.items()}}
    if gains is not None:
        record["mean_dice"] = {str(c): dict(g) for c, g in gains.items()}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    return path


def read_postprocessing(path: str | os.PathLike) -> dict[int, bool]:
    """The decision stored by :func:`write_postprocessing`, with integer class keys."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        decision = record["keep_largest_component"]
        return {int(c): bool(v) for c, v in decision.items()}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PostprocessingError(f"{path}: cannot read post-processing: {err}") from None
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PostprocessingError(
            f"{path}: expected {{'keep_largest_component': {{'CLASS': true|false, ...}}}}"
        ) from None
