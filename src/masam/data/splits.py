"""Cross-validation folds in nnU-Net's ``splits_final.json`` format.

The file is a JSON list with one ``{"train": [...], "val": [...]}`` object per fold. New splits
follow nnU-Net's own convention (``generate_crossval_split`` called from the trainer's ``do_split``):
case names sorted, then scikit-learn's ``KFold(n_splits, shuffle=True, random_state=12345)``, i.e.
the indices 0..N-1 shuffled by ``numpy.random.RandomState(seed)`` and cut into ``n_folds``
contiguous chunks, the first ``N % n_folds`` chunks one case longer; each fold's ``val`` is one chunk
and ``train`` the rest, both in sorted order. With the default seed a dataset gets the same folds
as nnU-Net would give it, so results can be compared fold by fold.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from .dataset import DatasetError

NNUNET_SEED = 12345

Splits = list[dict[str, list[str]]]


def make_folds(case_ids: Iterable[str], n_folds: int = 5, seed: int = NNUNET_SEED) -> Splits:
    """``n_folds`` folds over ``case_ids``: every case in exactly one ``val`` list."""
    names = sorted(set(case_ids))
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    if len(names) < n_folds:
        raise ValueError(f"{n_folds} folds need at least {n_folds} cases, got {len(names)}")
    order = np.arange(len(names))
    np.random.RandomState(seed).shuffle(order)
    sizes = np.full(n_folds, len(names) // n_folds)
    sizes[: len(names) % n_folds] += 1
    splits: Splits = []
    start = 0
    for size in sizes:
        val_idx = set(order[start : start + size].tolist())
        start += size
        splits.append(
            {
                "train": [n for i, n in enumerate(names) if i not in val_idx],
                "val": [n for i, n in enumerate(names) if i in val_idx],
            }
        )
    return splits


def _check_splits(value, source: str) -> Splits:
    if not isinstance(value, list) or not value:
        raise DatasetError(f"{source}: expected a non-empty list of {{'train': [...], 'val': [...]}} folds")
    for i, fold in enumerate(value):
        ok = isinstance(fold, dict) and all(
            isinstance(fold.get(k), list) and all(isinstance(n, str) for n in fold[k]) for k in ("train", "val")
        )
        if not ok:
            raise DatasetError(f"{source}: fold {i} is not {{'train': [names], 'val': [names]}}")
        both = set(fold["train"]) & set(fold["val"])
        if both:
            raise DatasetError(f"{source}: fold {i} has cases in both train and val: {sorted(both)[:5]}")
    return [{"train": list(f["train"]), "val": list(f["val"])} for f in value]


def read_splits(path: str | os.PathLike) -> Splits:
    """A ``splits_final.json`` file, checked (a list of folds, names as strings, train and val disjoint)."""
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read split file: {err}") from None
    return _check_splits(value, str(path))


def write_splits(path: str | os.PathLike, splits: Splits) -> Path:
    """Write ``splits`` as nnU-Net does (a JSON list), atomically."""
    path = Path(path)
    checked = _check_splits(splits, str(path))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(checked, indent=1))
    return path


def fold_cases(splits: Splits, fold: int | str, known: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """``(train, val)`` names of ``fold`` (0-based index, or ``"all"``: every case of the splits
    trains, none validates). ``known``: the dataset's case names; a split naming another case is
    an error."""
    every = sorted({n for f in splits for k in ("train", "val") for n in f[k]})
    if known is not None:
        unknown = sorted(set(every) - set(known))
        if unknown:
            raise DatasetError(f"the split names cases the dataset lacks: {unknown[:5]}")
    if fold == "all":
        return every, []
    try:
        index = int(fold)
    except (TypeError, ValueError):
        raise ValueError(f"fold must be an integer or 'all', got {fold!r}") from None
    if not 0 <= index < len(splits):
        raise ValueError(f"fold {index} does not exist: the split has folds 0 to {len(splits) - 1}")
    return list(splits[index]["train"]), list(splits[index]["val"])
