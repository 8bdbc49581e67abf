"""Ensembles: the softmax probabilities of several models averaged before the argmax.

Two ways, as in nnU-Net: models run together on each input (:func:`mean_probs_fn` over
:func:`volume_probs_fn` of each predictor), or probability files saved by ``masam predict
--save-probabilities`` (``CASE_probabilities.npz``: ``probabilities`` ``[K+1, *shape]`` float16,
``spacing``, ``origin``, ``direction``) combined afterwards (:func:`ensemble_probability_files`,
:func:`ensemble_folders`, what ``nnUNetv2_ensemble`` does). The mean is taken in float32.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.io import Volume, write_label
from ..fileio import atomic_path

ProbsFn = Callable[[torch.Tensor], torch.Tensor]
PROBABILITIES_SUFFIX = "_probabilities.npz"


class EnsembleError(ValueError):
    """Models or probability files that cannot be averaged; the message names them and the difference."""


def model_spec(model) -> dict:
    """What must agree between ensembled models: their classes and their input spec (image size,
    slices per stack, channels, normalisation, convention). ``model``: a :class:`masam.model.masam.MASAM`."""
    from .predictor import model_input_spec

    spec = model_input_spec(model).to_dict()
    spec.pop("intensity", None)  # what each model saw in training; it may differ between folds
    meta = model.metadata or {}
    # issue 28: a box model averaged with automatic ones gives almost nothing without a box
    prompt = {"prompt": meta.get("prompt", "none"), "box_label": meta.get("box_label")}
    if prompt["prompt"] != "none":  # box, points or box+points (issue 22)
        prompt["unprompted"] = meta.get("prompt_dropout", 0) > 0
    return {"classes": dict(model.config.label_names) or model.config.num_classes, "input": spec, "prompt": prompt}


def refuse_incompatible(specs: Mapping[str, dict]) -> None:
    """Raise :class:`EnsembleError` unless every model's spec (``{"classes": ..., "input": {...}}``,
    e.g. from :func:`model_spec`) equals the first one's. Keys of ``specs`` name the models."""
    if len(specs) < 1:
        raise EnsembleError("an ensemble needs at least one model")
    (first_name, first), *others = specs.items()
    for name, spec in others:
        for key in ("classes", "input", "prompt"):
            if spec.get(key) != first.get(key):
                raise EnsembleError(
                    f"{name}: {key} {json.dumps(spec.get(key), sort_keys=True)} differ from {first_name}'s "
                    f"{json.dumps(first.get(key), sort_keys=True)}; an ensemble needs models with the same {key}: "
                    f"give one model (-m {first_name}) or only runs of one kind"
                )


def average_probabilities(arrays: Sequence[np.ndarray | torch.Tensor], names: Sequence[str] | None = None):
    """Mean of equally shaped probability arrays ``[K+1, ...]`` in float32 (numpy in, numpy out;
    tensors in, tensor out)."""
    if not arrays:
        raise EnsembleError("nothing to average")
    names = list(names) if names is not None else [f"model {i}" for i in range(len(arrays))]
    shape = tuple(arrays[0].shape)
    for name, array in zip(names[1:], arrays[1:]):
        if tuple(array.shape) != shape:
            what = "classes" if array.shape[1:] == shape[1:] else "shape"
            raise EnsembleError(f"{name}: probabilities of shape {list(array.shape)} differ in {what} from "
                                f"{names[0]}'s {list(shape)}")  # fmt: skip
    if isinstance(arrays[0], torch.Tensor):
        total = arrays[0].float().clone()
        for array in arrays[1:]:
            total += array.float()
        return total / len(arrays)
    total = np.asarray(arrays[0], dtype=np.float32).copy()
    for array in arrays[1:]:
        total += np.asarray(array, dtype=np.float32)
    return total / np.float32(len(arrays))


def volume_probs_fn(predictor) -> ProbsFn:
    """A :class:`masam.infer.Predictor` as a function from normalised model-sized slices
    ``[S, C, size, size]`` to averaged stack probabilities ``[S, K+1, size, size]`` (float32, on
    the predictor's device): the form that :mod:`masam.infer.tta` and :func:`mean_probs_fn` take."""

    def run(slices: torch.Tensor) -> torch.Tensor:
        out = dict(predictor.slice_probabilities(slices))
        return torch.stack([out[i] for i in range(slices.shape[0])])

    return run


def mean_probs_fn(probs_fns: Sequence[ProbsFn]) -> ProbsFn:
    """One function averaging the probabilities of several (one per model)."""
    if not probs_fns:
        raise EnsembleError("an ensemble needs at least one model")

    def run(slices: torch.Tensor) -> torch.Tensor:
        total = None
        for i, fn in enumerate(probs_fns):
            probs = fn(slices).float()
            if total is not None and probs.shape != total.shape:
                raise EnsembleError(f"model {i}: probabilities {list(probs.shape)} differ from model 0's "
                                    f"{list(total.shape)}")  # fmt: skip
            total = probs.clone() if total is None else total.add_(probs)
        return total / len(probs_fns)

    return run


def read_probabilities(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, tuple[float, ...]]]:
    """A saved ``CASE_probabilities.npz``: the array ``[K+1, *shape]`` as stored, and its geometry
    (``spacing``, ``origin``, ``direction``, SimpleITK order)."""
    path = Path(path)
    try:
        with np.load(path) as data:
            probs = data["probabilities"]
            geometry = {k: tuple(float(v) for v in data[k]) for k in ("spacing", "origin", "direction")}
    except KeyError as err:
        raise EnsembleError(f"{path}: not a masam probability file (no {err.args[0]!r} array)") from None
    except (OSError, ValueError) as err:
        raise EnsembleError(f"{path}: cannot read probabilities: {err}") from None
    if probs.ndim < 3:
        raise EnsembleError(f"{path}: probabilities of shape {list(probs.shape)}; expected [classes, ...]")
    return probs, geometry


def _same_geometry(a: dict, b: dict) -> bool:
    return all(len(a[k]) == len(b[k]) and np.allclose(a[k], b[k], atol=1e-4) for k in a)


def ensemble_probability_files(
    files: Sequence[str | os.PathLike], output: str | os.PathLike, save_probabilities: str | os.PathLike | None = None
) -> Path:
    """Average saved probability files of one case (one per model), write the argmax label map to
    ``output`` (format from its extension) with the files' geometry, and, when asked, the mean
    probabilities (float16, the same npz layout) to ``save_probabilities``. Files must agree in
    classes, shape and geometry."""
    if not files:
        raise EnsembleError(f"{output}: no probability files to ensemble")
    arrays, first_geometry = [], None
    for path in files:
        probs, geometry = read_probabilities(path)
        if first_geometry is not None and not _same_geometry(geometry, first_geometry):
            raise EnsembleError(f"{path}: geometry (spacing, origin or direction) differs from {files[0]}'s")
        first_geometry = first_geometry or geometry
        arrays.append(probs)
    mean = average_probabilities(arrays, [str(f) for f in files])
    labels = mean.argmax(0).astype(np.uint8 if mean.shape[0] <= 256 else np.int32)
    reference = Volume(labels, first_geometry["spacing"], first_geometry["origin"], first_geometry["direction"],
                       Path(output))  # fmt: skip
    try:
        written = write_label(output, labels, reference)
    except RuntimeError as err:
        raise EnsembleError(f"{output}: cannot write the ensemble: {err}") from None
    if save_probabilities is not None:
        with atomic_path(save_probabilities) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, probabilities=mean.astype(np.float16),
                                **{k: np.asarray(v) for k, v in first_geometry.items()})  # fmt: skip
    return written


def ensemble_folders(
    folders: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    file_ending: str = ".nii.gz",
    save_probabilities: bool = False,
) -> list[Path]:
    """``nnUNetv2_ensemble -i FOLDER... -o OUT``: every case's ``CASE_probabilities.npz`` from each
    folder averaged into ``OUT/CASE{file_ending}``. Every folder must hold the same cases."""
    if len(folders) < 2:
        raise EnsembleError("an ensemble needs at least two folders of probabilities")
    found = []
    for folder in map(Path, folders):
        if not folder.is_dir():
            raise EnsembleError(f"{folder}: no such folder")
        cases = {p.name[: -len(PROBABILITIES_SUFFIX)] for p in folder.glob(f"*{PROBABILITIES_SUFFIX}")}
        if not cases:
            raise EnsembleError(f"{folder}: no *{PROBABILITIES_SUFFIX} files (predict with --save-probabilities)")
        found.append(cases)
    for folder, cases in zip(folders[1:], found[1:]):
        if cases != found[0]:
            diff = sorted(cases ^ found[0])
            raise EnsembleError(f"{folder}: cases differ from {folders[0]}'s ({', '.join(diff[:5])})")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for case in sorted(found[0]):
        files = [Path(f) / f"{case}{PROBABILITIES_SUFFIX}" for f in folders]
        probs_out = out / f"{case}{PROBABILITIES_SUFFIX}" if save_probabilities else None
        written.append(ensemble_probability_files(files, out / f"{case}{file_ending}", probs_out))
    return written
