"""Connected-component post-processing, in one place: its settings (``masam postprocess``), the
decision on the folds' validation predictions, its file, and its application to a label map.

``keep_largest_component`` sets to background every component of a class but its largest
(26-connectivity in 3D, 8 in 2D: voxels touching by a corner are one component, as in MONAI's
``KeepLargestConnectedComponent`` and nnU-Net). ``choose_postprocessing`` keeps it for a class
only where it raises that class's mean Dice over the cross-validation cases, nnU-Net's per-class
rule (``determine_postprocessing``). Removing voxels of one class only ever turns them into
background, so the classes do not interact and each is decided on the raw predictions.

The decision is stored as JSON beside the model (:func:`write_postprocessing`), e.g.
``{"keep_largest_component": {"1": true, "2": false}, "mean_dice": {...}}``. Cross-validation over
fold runs (issue 16, :func:`postprocess_runs`): the folds' kept validation predictions
(``RUN/validation/``, written by ``masam train --fold F``) scored against the dataset's labels, the
decision taken on all of them and stored in every fold run, where ``masam predict`` finds it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..data.dataset import load_dataset
from ..errors import InputError
from ..eval.metrics import dice
from ..fileio import atomic_path
from ..options import setting
from ..run_folder import RunFolder


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
    return decision_from_gains(postprocessing_gains(pred_arrays, ref_arrays, classes))


def decision_from_gains(gains: Mapping[int, Mapping[str, float]]) -> dict[int, bool]:
    """The rule: keep the largest component of a class only where that strictly raises its mean Dice."""
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


@dataclass
class PostprocessConfig:
    """``masam postprocess``: keep-largest-component decided per class on the folds' validation/."""

    model: list[str] = setting(
        help="the fold run folders (each with validation/ from masam train --fold), or their parent folder",
        group="files", short="-m",
    )  # fmt: skip


LABEL_ENDING = ".nii.gz"


def _read(path: Path) -> np.ndarray:
    try:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as err:
        raise InputError(f"{path}: cannot read the label map: {err}") from None


def fold_validation(run_dir: str | os.PathLike) -> tuple[list[str], list[np.ndarray], list[np.ndarray], dict]:
    """``(case names, predictions, references, labels)`` of one fold run: its ``validation/`` label
    maps and the dataset's (named in ``config.json``) reference labels; ``labels``: ``{name: value}``."""
    run = RunFolder(run_dir)
    dataset_dir = run.train_settings().get("dataset")
    if not dataset_dir:
        raise InputError(f"{run.config_file}: names no dataset")
    dataset = load_dataset(dataset_dir)
    refs = {c.name: c.label for c in dataset.training}
    preds = sorted(run.validation_dir.glob(f"*{LABEL_ENDING}"))
    if not preds:
        raise InputError(f"{run.validation_dir}: no validation predictions (train with --fold)")
    names = [p.name[: -len(LABEL_ENDING)] for p in preds]
    missing = [n for n in names if n not in refs]
    if missing:
        raise InputError(f"{run.path}: validation cases not in the dataset: {missing[:5]}")
    return names, [_read(p) for p in preds], [_read(refs[n]) for n in names], dataset.labels


def mean_dice(preds: list[np.ndarray], refs: list[np.ndarray], classes: list[int]) -> float:
    """Mean over cases and classes of the 3D Dice (a class absent from both counts 1)."""
    return float(np.mean([dice(p == c, r == c) for p, r in zip(preds, refs) for c in classes]))


def postprocess_runs(run_dirs: list[str | os.PathLike]) -> dict:
    """Decide keep-largest-component per class on all folds' validation predictions, write
    ``postprocessing.json`` into every run and return ``{"folds": {run: mean Dice}, "cross_validation":
    {"before": d, "after": d}, "keep_largest_component": {class: bool}, "per_class": gains}``."""
    folds, all_preds, all_refs, labels = {}, [], [], {}
    for run in run_dirs:
        _, preds, refs, labels = fold_validation(run)
        classes = sorted(v for v in labels.values() if v > 0)
        folds[str(run)] = mean_dice(preds, refs, classes)
        all_preds += preds
        all_refs += refs
    classes = sorted(v for v in labels.values() if v > 0)
    gains = postprocessing_gains(all_preds, all_refs, classes)
    decision = decision_from_gains(gains)
    for run in run_dirs:
        write_postprocessing(RunFolder(run).postprocessing_file, decision, gains)
    after = [max(g["after"], g["before"]) for g in gains.values()]
    return {
        "folds": folds,
        "cross_validation": {"before": float(np.mean([g["before"] for g in gains.values()])),
                             "after": float(np.mean(after))},
        "keep_largest_component": decision,
        "per_class": gains,
    }  # fmt: skip
