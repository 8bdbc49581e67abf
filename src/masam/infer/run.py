"""``masam predict`` as a function: inputs found, predictions written with the input's geometry."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.io import (
    FRAME_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    case_name,
    list_frames,
    read_label,
    read_volume,
    scan_cases,
    slice_axis,
    write_label,
)
from ..data.slices import boxes_from_mask, labels_to_slices, to_slices
from ..errors import MasamError, MissingFileError, OutputError
from ..fileio import atomic_path
from .boxes import Prompt, read_boxes_file
from .overlay import save_overlays
from .predictor import Prediction, Predictor


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def find_inputs(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(case name, path)`` for one image file, one frame folder, or a folder of either. nnU-Net's
    channel suffix ``_0000`` is dropped from names; other channels are skipped."""
    path = Path(path)
    if path.is_file():
        return [(case_name(path.name, channel_suffix=False).removesuffix("_0000"), path)]
    if not path.is_dir():
        raise MissingFileError(f"{path}: no such file or folder")
    if list_frames(path):
        return [(path.name, path)]
    cases = list(scan_cases(path, channel_suffix=True).items())
    if not cases:
        raise MissingFileError(f"{path}: no images ({', '.join(VOLUME_SUFFIXES + FRAME_SUFFIXES)})")
    return cases


def _ending(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), ".nii.gz")


def boxes_from_labels(labels: np.ndarray, axis: int, is_video: bool = False) -> dict[int, list[float]]:
    """One box per slice around all foreground (x0, y0, x1, y1 in voxels); no box where empty."""
    boxes = boxes_from_mask(labels_to_slices(labels, axis, is_video) > 0)
    return {i: [float(v) for v in box] for i, box in enumerate(boxes) if not np.isnan(box).any()}


@dataclass
class _Outputs:
    """Where and what ``predict_inputs`` writes."""

    folder: Path
    output_format: str | None
    save_probabilities: bool
    overlays: bool

    def write(self, name: str, path: Path, result: Prediction, predictor: Predictor) -> Path:
        volume = result.volume
        target = self.folder / name if volume.is_video else self.folder / f"{name}{self.output_format or _ending(path)}"
        written = write_label(target, result.labels, volume)
        if self.save_probabilities:
            with atomic_path(self.folder / f"{name}_probabilities.npz") as tmp, open(tmp, "wb") as f:
                np.savez_compressed(
                    f,
                    probabilities=result.probabilities,
                    spacing=np.asarray(volume.spacing),
                    origin=np.asarray(volume.origin),
                    direction=np.asarray(volume.direction),
                )
        if self.overlays:
            axis = result.slice_axis
            grey = predictor.normalization(to_slices(volume, axis)[0])
            grey = np.moveaxis(grey, 1, -1) if grey.shape[1] == 3 else grey[:, 0]
            labels = labels_to_slices(result.labels, axis, volume.is_video)
            save_overlays(grey, labels, self.folder / "overlays", name)
        return written


def _case_boxes(name: str, volume: Volume, prompts: dict[str, Prompt], labels_dir, box_label: int | None):
    """The case's prompt: per-slice boxes from its reference label (around class ``box_label``,
    None: all foreground), its entry in the boxes file, or None."""
    if labels_dir is not None:
        ref = read_label(_find_label(Path(labels_dir), name, volume), volume).array
        target = ref if box_label is None else (ref == box_label).astype(np.uint8)
        return boxes_from_labels(target, slice_axis(volume), volume.is_video)
    return prompts.get(name)


def _read_prompts(boxes_file, names: list[str]) -> dict[str, Prompt]:
    """Prompts per case of ``boxes_file`` (JSON or CSV, :func:`read_boxes_file`); cases that are
    not among the inputs get a warning, not an error (one file may serve several folders)."""
    if boxes_file is None:
        return {}
    prompts = read_boxes_file(boxes_file)
    unknown = sorted(set(prompts) - set(names))
    if unknown:
        warnings.warn(f"{boxes_file}: boxes for cases not among the inputs: {', '.join(unknown)}", stacklevel=2)
    return prompts


def predict_inputs(
    predictor: Predictor,
    inputs: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    output_format: str | None = None,
    save_probabilities: bool = False,
    overlays: bool = False,
    boxes_file: str | os.PathLike | None = None,
    boxes_from_labels_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> PredictReport:
    """Predict every case; a bad case is reported and skipped, the others still finish."""
    cases = find_inputs(inputs)
    outputs = _Outputs(Path(output_dir), output_format, save_probabilities, overlays)
    try:
        outputs.folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{outputs.folder}: cannot create the output folder: {err.strerror}") from None
    prompts = _read_prompts(boxes_file, [name for name, _ in cases])
    report = PredictReport()
    iterator = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="cases", unit="case")
    for name, path in iterator:
        try:
            volume = read_volume(path)
            boxes = _case_boxes(name, volume, prompts, boxes_from_labels_dir, predictor.box_label)
            result = predictor.predict(
                volume, boxes=boxes, return_probabilities=save_probabilities, progress=progress,
                where=f"{boxes_file}: case {name!r}",
            )  # fmt: skip
            report.written.append(outputs.write(name, path, result, predictor))
        except (MasamError, OSError) as err:
            report.failed[name] = str(err)
    return report


def _find_label(folder: Path, name: str, volume: Volume) -> Path:
    if volume.is_video and (folder / name).is_dir():
        return folder / name
    for suffix in VOLUME_SUFFIXES:
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    raise MissingFileError(f"{folder}: no reference label for {name}")
