"""Read, normalise and resize every case once into a cache of memory-mapped arrays (the step
nnU-Net calls preprocessing), so that training never re-reads a volume per stack.

Cache layout (``CACHE/``): ``plan.json`` (image size, normalisation, labels, cases) and per case
``CASE_image.npy`` (float32 ``[S, C, size, size]``; issue 24: a float16 cache moved 2.9 % of the CT
window's HU levels and 51 % of an RGB frame's 8-bit values to another 8-bit value, which the
augmentation ops then see, benchmarks/results/fidelity_cache.json), ``CASE_label.npy`` (uint8 ``[S, size, size]``)
and ``CASE.json`` (source paths, geometry, slice axis).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DatasetError
from ..fileio import atomic_path
from ..run_folder import CacheFolder
from .channels import read_channels
from .dataset import Case, Dataset, check_label_values
from .io import read_label
from .labels import merge_labels
from .normalize import ChannelNormalization, Normalization
from .slices import labels_to_slices, prepare_image, resize_slices


def dataset_normalization(
    dataset: Dataset,
    ct_window: tuple[float, float],
    mri_percentile: float,
    mri_rule: str,
    stack_minmax: bool = False,
) -> Normalization | ChannelNormalization:
    """One rule per channel, by the channel's modality (several channels: :class:`ChannelNormalization`).
    ``stack_minmax``: each stack scaled by its own range afterwards (the original's; one channel)."""
    modalities = dataset.channel_modalities or (dataset.modality,)
    if stack_minmax and len(modalities) > 1:
        raise ConfigError(f"--stack-minmax takes one channel; {dataset.root} has {len(modalities)}")
    norms = [
        Normalization(m, ct_window, mri_percentile, mri_rule=mri_rule, stack_minmax=stack_minmax) for m in modalities
    ]
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
    folder = CacheFolder(cache)
    _write_npy(folder.image(case.name), slices.numpy().astype(CACHE_DTYPE))
    _write_npy(folder.label(case.name), label_slices.numpy().astype(np.uint8))
    with atomic_path(folder.record(case.name)) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    return info


# issue 24: float32, the dtype the normalisation computes in (twice float16's size)
CACHE_DTYPE = np.float32


def cache_plan(
    dataset: Dataset,
    image_size: int,
    normalization: Normalization | ChannelNormalization,
    label_map: dict[int, int] | None = None,
) -> dict:
    """What a cache was made with (its ``plan.json`` less the case list)."""
    return {
        "image_size": image_size,
        # stack_minmax acts where stacks are cut, not on the cached slices
        "normalization": {k: v for k, v in normalization.to_dict().items() if k != "stack_minmax"},
        "labels": dataset.labels,
        "modality": normalization.modality,
        "label_map": {str(k): v for k, v in label_map.items()} if label_map else None,
        "image_dtype": np.dtype(CACHE_DTYPE).name,  # an older float16 cache is rebuilt
    }


def check_cache(cache: str | os.PathLike, plan: dict, cases: list[str]) -> None:
    """Refuse (:class:`DatasetError`, one line) a cache written under another plan or missing cases."""
    path = CacheFolder(cache).plan_file
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DatasetError(f"{path}: not a cache written by masam preprocess: {err}") from None
    differ = [k for k in plan if old.get(k) != json.loads(json.dumps(plan[k]))]
    if differ:
        shown = "; ".join(f"{k}: cache {old.get(k)}, run {plan[k]}" for k in differ)
        raise DatasetError(f"{cache}: the cache was made with other settings ({shown}); preprocess again")
    missing = sorted(set(cases) - set(old.get("cases", [])))
    if missing:
        raise DatasetError(f"{cache}: the cache lacks {len(missing)} case(s) of the dataset, e.g. {missing[0]}")


def preprocess_dataset(
    dataset: Dataset,
    cache: str | os.PathLike,
    image_size: int,
    normalization: Normalization | ChannelNormalization,
    progress: bool = False,
    processes: int = 1,
    label_map: dict[int, int] | None = None,
) -> Path:
    """Fill ``cache`` with every training case; cases already there under the same plan are kept.

    ``processes`` > 1 preprocesses that many cases at once in a pool of processes; the cache is the
    same file for file as with one process (each case is written by the same function).
    ``label_map``: label values merged as they are read (``dataset.labels`` already merged).
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    plan = cache_plan(dataset, image_size, normalization, label_map)
    plan_path = CacheFolder(cache).plan_file
    old = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    same_plan = old is not None and {k: old.get(k) for k in plan} == json.loads(json.dumps(plan))
    done = set(old.get("cases", [])) if same_plan else set()

    def complete(case: Case) -> bool:
        return case.name in done and all(p.is_file() for p in CacheFolder(cache).case_files(case.name))

    todo = [case for case in dataset.training if not complete(case)]
    args = (dataset.labels, normalization, image_size, cache, label_map)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(dataset.training), initial=len(dataset.training) - len(todo), desc="preprocess",
                   unit="case")  # fmt: skip
    try:
        for _ in _run_cases(todo, args, processes):
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()  # before an error is printed, so that the two do not share a line
    plan["cases"] = sorted(done | {case.name for case in dataset.training})
    with atomic_path(plan_path) as tmp:
        tmp.write_text(json.dumps(plan, indent=1))
    return cache


def _run_cases(cases: list[Case], args: tuple, processes: int) -> Iterator[dict]:
    """:func:`preprocess_case` of each case with ``args``, in this process and ``processes - 1``
    worker processes; yields each case's info as it finishes. The first error stops the pool and is
    raised."""
    if processes <= 1 or len(cases) <= 1:
        for case in cases:
            yield preprocess_case(case, *args)
        return
    todo = deque(cases)
    workers = min(processes, len(cases)) - 1
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // processes))  # this process shares the cores with the workers
    # fork where it is the norm (Linux): a worker is ready at once, where a spawned one spends about
    # 2 s importing torch. Workers run one torch thread (as DataLoader workers do), so they never
    # enter the OpenMP pool inherited from this process; the only ITK work is reading NIfTI files.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    try:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_single_thread) as pool:
            running: set[Future] = set()
            try:
                while todo or running:
                    # one case per worker at a time: the rest stay here, and this process works on
                    # them meanwhile (also while spawned workers start)
                    while todo and len(running) < workers:
                        running.add(pool.submit(preprocess_case, todo.popleft(), *args))
                    if todo:
                        yield preprocess_case(todo.popleft(), *args)
                        finished = {future for future in running if future.done()}
                    else:
                        finished = wait(running, return_when=FIRST_COMPLETED).done
                    running -= finished
                    for future in finished:
                        yield future.result()
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        torch.set_num_threads(threads)


def _single_thread() -> None:
    # each worker is one of several processes sharing the cores: one thread each, no oversubscription
    torch.set_num_threads(1)
