"""Read, normalise and resize every case once into a cache of memory-mapped arrays (the step
nnU-Net calls preprocessing), so that training never re-reads a volume per stack.

Cache layout (``CACHE/``): ``plan.json`` (image size, normalisation, labels, cases) and per case
``CASE_image.npy`` (float16 ``[S, C, size, size]``), ``CASE_label.npy`` (uint8 ``[S, size, size]``)
and ``CASE.json`` (source paths, geometry, slice axis).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..fileio import atomic_path
from .channels import read_channels
from .dataset import Case, Dataset, check_label_values
from .io import read_label
from .normalize import ChannelNormalization, Normalization
from .prepare import merge_labels
from .slices import labels_to_slices, prepare_image, resize_slices


def dataset_normalization(
    dataset: Dataset, ct_window: tuple[float, float], mri_percentile: float
) -> Normalization | ChannelNormalization:
    """One rule per channel, by the channel's modality (several channels: :class:`ChannelNormalization`)."""
    norms = [Normalization(m, ct_window, mri_percentile) for m in dataset.channel_modalities or (dataset.modality,)]
    return norms[0] if len(norms) == 1 else ChannelNormalization(norms)


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def preprocess_case(
    case: Case,
    labels: dict[str, int],
    normalization: Normalization | ChannelNormalization,
    image_size: int,
    cache: Path,
    label_map: dict[int, int] | None = None,
) -> dict:
    """``label_map``: label values merged as they are read (``--merge-labels``, e.g. ``{13: 12}``)."""
    image = read_channels(case.images)
    label = read_label(case.label, image)
    label_array = merge_labels(label.array, label_map or {})
    check_label_values(np.unique(label_array), labels, case.label)
    slices, axis = prepare_image(image, normalization, image_size)
    label_slices = resize_slices(labels_to_slices(label_array, axis, image.is_video), image_size, labels=True)
    info = {
        "name": case.name,
        "image": str(case.image),
        "label": str(case.label),
        "slice_axis": axis,
        "shape": list(image.array.shape),
        "spacing": list(image.spacing),
        "origin": list(image.origin),
        "direction": list(image.direction),
        "is_video": image.is_video,
        "num_slices": int(slices.shape[0]),
    }
    _write_npy(cache / f"{case.name}_image.npy", slices.numpy().astype(np.float16))
    _write_npy(cache / f"{case.name}_label.npy", label_slices.numpy().astype(np.uint8))
    with atomic_path(cache / f"{case.name}.json") as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return info


def preprocess_dataset(
    dataset: Dataset,
    cache: str | os.PathLike,
    image_size: int,
    normalization: Normalization | ChannelNormalization,
    progress: bool = False,
    label_map: dict[int, int] | None = None,
) -> Path:
    """Fill ``cache`` with every training case; cases already there under the same plan are kept.
    ``label_map``: label values merged as they are read (``dataset.labels`` already merged)."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    plan = {
        "image_size": image_size,
        "normalization": normalization.to_dict(),
        "labels": dataset.labels,
        "modality": normalization.modality,
        "label_map": {str(k): v for k, v in label_map.items()} if label_map else None,
    }
    plan_path = cache / "plan.json"
    old = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    same_plan = old is not None and {k: old.get(k) for k in plan} == json.loads(json.dumps(plan))
    cases = dataset.training
    if progress:
        from tqdm import tqdm

        cases = tqdm(cases, desc="preprocess", unit="case")
    done = set(old.get("cases", [])) if same_plan else set()
    for case in cases:
        complete = all((cache / f"{case.name}{s}").is_file() for s in ("_image.npy", "_label.npy", ".json"))
        if not (case.name in done and complete):
            preprocess_case(case, dataset.labels, normalization, image_size, cache, label_map)
        done.add(case.name)
    plan["cases"] = sorted(done)
    with atomic_path(plan_path) as tmp:
        tmp.write_text(json.dumps(plan, indent=1))
    return cache
