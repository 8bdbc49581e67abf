"""Cross-validation over fold runs (issue 16): the folds' kept validation predictions
(``RUN/validation/``, written by ``masam train --fold F``) scored against the dataset's labels,
and nnU-Net's per-class post-processing decision taken on all of them and stored in every fold run
(``postprocessing.json``), where ``masam predict`` finds it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..data.dataset import load_dataset
from ..errors import InputError
from ..eval.metrics import dice
from ..infer.postprocess import postprocessing_gains, write_postprocessing
from ..run_folder import RunFolder

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
    decision = {c: g["after"] > g["before"] for c, g in gains.items()}
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
