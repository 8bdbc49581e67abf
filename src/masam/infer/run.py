"""``masam predict`` as a function: inputs found, predictions written with the input's geometry."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.io import (
    FRAME_SUFFIXES,
    VOLUME_SUFFIXES,
    ImageReadError,
    Volume,
    list_frames,
    read_label,
    read_volume,
    slice_axis,
    strip_suffix,
    write_label,
)
from ..data.slices import labels_to_slices, to_slices
from ..fileio import atomic_path
from .overlay import save_overlays
from .predictor import Predictor
from .shard import distributed_part, select_part


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def find_inputs(path: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(case name, path)`` for one image file, one frame folder, or a folder of either. nnU-Net's
    channel suffix ``_0000`` is dropped from names; other channels are skipped."""
    path = Path(path)
    if path.is_file():
        return [(_case_name(path.name), path)]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if list_frames(path):
        return [(path.name, path)]
    cases = []
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.name.lower().endswith(VOLUME_SUFFIXES):
            stem = strip_suffix(entry.name)
            if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit() and stem[-4:] != "0000":
                continue
            cases.append((_case_name(entry.name), entry))
        elif entry.is_dir() and list_frames(entry):
            cases.append((entry.name, entry))
    if not cases:
        raise FileNotFoundError(f"{path}: no images ({', '.join(VOLUME_SUFFIXES + FRAME_SUFFIXES)})")
    return cases


def _case_name(filename: str) -> str:
    stem = strip_suffix(filename)
    return stem[:-5] if stem.endswith("_0000") else stem


def _ending(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in VOLUME_SUFFIXES if name.endswith(s)), ".nii.gz")


def boxes_from_labels(labels: np.ndarray, axis: int, is_video: bool = False) -> dict[int, list[float]]:
    """One box per slice around all foreground (x0, y0, x1, y1 in voxels); no box where empty."""
    slices = labels_to_slices(labels, axis, is_video)
    boxes = {}
    for i, s in enumerate(slices):
        rows, cols = np.nonzero(s)
        if rows.size:
            boxes[i] = [float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())]
    return boxes


def _check_boxes(boxes: dict, volume: Volume, axis: int, source: str) -> dict[int, list[float]]:
    slices_shape = to_slices(volume, axis)[0].shape
    n, rows, cols = slices_shape[0], slices_shape[-2], slices_shape[-1]
    out = {}
    for key, box in boxes.items():
        index = int(key)
        if not 0 <= index < n:
            raise ValueError(f"{source}: box for slice {index}, but the image has {n} slices")
        if len(box) != 4 or not (0 <= box[0] <= box[2] < cols and 0 <= box[1] <= box[3] < rows):
            raise ValueError(f"{source}: box {box} for slice {index} lies outside the {cols}x{rows} slice")
        out[index] = [float(v) for v in box]
    return out


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
    num_parts: int = 1,
    part_id: int = 0,
) -> PredictReport:
    """Predict every case; a bad case is reported and skipped, the others still finish.

    Only part ``part_id`` of ``num_parts`` of the cases is predicted, and under torchrun only this
    rank's share of it (see :mod:`masam.infer.shard`)."""
    cases = select_part(select_part(find_inputs(inputs), num_parts, part_id), *distributed_part())
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_boxes = {}
    if boxes_file is not None:
        try:
            all_boxes = json.loads(Path(boxes_file).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{boxes_file}: cannot read boxes: {err}") from None
    report = PredictReport()
    iterator = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="cases", unit="case")
    for name, path in iterator:
        try:
            volume = read_volume(path)
            axis = slice_axis(volume)
            boxes = None
            if boxes_from_labels_dir is not None:
                ref_path = _find_label(Path(boxes_from_labels_dir), name, volume)
                boxes = boxes_from_labels(read_label(ref_path, volume).array, axis, volume.is_video)
            elif name in all_boxes:
                boxes = _check_boxes(all_boxes[name], volume, axis, str(boxes_file))
            result = predictor.predict(volume, boxes=boxes, return_probabilities=save_probabilities, progress=progress)
            if volume.is_video:
                target = out / name
            else:
                target = out / f"{name}{output_format or _ending(path)}"
            report.written.append(write_label(target, result.labels, volume))
            if save_probabilities:
                with atomic_path(out / f"{name}_probabilities.npz") as tmp, open(tmp, "wb") as f:
                    np.savez_compressed(
                        f,
                        probabilities=result.probabilities,
                        spacing=np.asarray(volume.spacing),
                        origin=np.asarray(volume.origin),
                        direction=np.asarray(volume.direction),
                    )
            if overlays:
                grey = predictor.normalization(to_slices(volume, axis)[0])
                grey = np.moveaxis(grey, 1, -1) if grey.shape[1] == 3 else grey[:, 0]
                save_overlays(grey, labels_to_slices(result.labels, axis, volume.is_video), out / "overlays", name)
        except (ImageReadError, ValueError, FileNotFoundError, OSError) as err:
            report.failed[name] = str(err)
    return report


def _find_label(folder: Path, name: str, volume: Volume) -> Path:
    if volume.is_video and (folder / name).is_dir():
        return folder / name
    for suffix in VOLUME_SUFFIXES:
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    raise FileNotFoundError(f"{folder}: no reference label for {name}")
