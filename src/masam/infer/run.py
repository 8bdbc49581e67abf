"""``masam predict`` as a function: inputs found, predictions written with the input's geometry."""

from __future__ import annotations

import hashlib
import json
import os
import sys
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
from ..errors import InputError, MasamError, MissingFileError, OutputError
from ..fileio import atomic_path
from .overlay import save_overlays
from .predictor import Prediction, Predictor
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


def _check_boxes(boxes: dict, volume: Volume, axis: int, source: str) -> dict[int, list[float]]:
    slices_shape = to_slices(volume, axis)[0].shape
    n, rows, cols = slices_shape[0], slices_shape[-2], slices_shape[-1]
    out = {}
    for key, box in boxes.items():
        index = int(key)
        if not 0 <= index < n:
            raise InputError(f"{source}: box for slice {index}, but the image has {n} slices")
        if len(box) != 4 or not (0 <= box[0] <= box[2] < cols and 0 <= box[1] <= box[3] < rows):
            raise InputError(f"{source}: box {box} for slice {index} lies outside the {cols}x{rows} slice")
        out[index] = [float(v) for v in box]
    return out


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


def _read_boxes_file(boxes_file: str | os.PathLike | None) -> dict:
    if boxes_file is None:
        return {}
    try:
        return json.loads(Path(boxes_file).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{boxes_file}: cannot read boxes: {err}") from None


def _case_boxes(name: str, volume: Volume, all_boxes: dict, boxes_file, labels_dir) -> dict | None:
    axis = slice_axis(volume)
    if labels_dir is not None:
        ref_path = _find_label(Path(labels_dir), name, volume)
        return boxes_from_labels(read_label(ref_path, volume).array, axis, volume.is_video)
    if name in all_boxes:
        return _check_boxes(all_boxes[name], volume, axis, str(boxes_file))
    return None


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
    outputs = _Outputs(Path(output_dir), output_format, save_probabilities, overlays)
    marker = _claim_folder(outputs.folder, predictor)
    all_boxes = _read_boxes_file(boxes_file)
    report = PredictReport()
    iterator = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="cases", unit="case")
    for name, path in iterator:
        try:
            volume = read_volume(path)
            boxes = _case_boxes(name, volume, all_boxes, boxes_file, boxes_from_labels_dir)
            result = predictor.predict(volume, boxes=boxes, return_probabilities=save_probabilities, progress=progress)
            report.written.append(outputs.write(name, path, result, predictor))
            for warning in result.warnings:
                print(f"masam predict: warning: {name}: {warning}", file=sys.stderr)
        except (MasamError, OSError) as err:
            report.failed[name] = str(err)
    if report.written:  # a folder of failed cases stays empty
        with atomic_path(outputs.folder / MARKER) as tmp:
            tmp.write_text(json.dumps(marker))
    return report


MARKER = ".masam_model.json"  # names the model whose predictions a folder holds (issue 18)


def model_identity(predictor: Predictor) -> dict:
    """Arch, classes and a digest of the weights: enough to tell two models apart."""
    digest = hashlib.sha256()
    for name, tensor in predictor.model.state_dict().items():
        digest.update(name.encode())
        digest.update(np.float64(tensor.double().sum().item()).tobytes())
    config = predictor.model.config
    return {"arch": config.arch, "num_classes": config.num_classes, "digest": digest.hexdigest()[:16]}


def _claim_folder(folder: Path, predictor: Predictor) -> dict:
    """Create the output folder; warn (one line) when it holds predictions of another model, and
    refuse an output that names a file. Returns the marker's content (written once a case is)."""
    if folder.is_file() or any(folder.name.lower().endswith(s) for s in VOLUME_SUFFIXES):
        raise OutputError(f"{folder}: -o names the output folder, not a file (e.g. -o predictions)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{folder}: cannot create the output folder: {err.strerror}") from None
    mine, marker = model_identity(predictor), folder / MARKER
    try:
        theirs = json.loads(marker.read_text()) if marker.is_file() else None
    except (OSError, ValueError):
        theirs = {}
    if theirs is not None and theirs != mine:
        print(f"masam predict: warning: {folder}: holds predictions of another model; old files stay", file=sys.stderr)
    elif theirs is None and any(p.name != MARKER for p in folder.iterdir()):
        print(f"masam predict: warning: {folder}: holds files of an unknown model; old files stay", file=sys.stderr)
    return mine


def _find_label(folder: Path, name: str, volume: Volume) -> Path:
    if volume.is_video and (folder / name).is_dir():
        return folder / name
    for suffix in VOLUME_SUFFIXES:
        if (folder / f"{name}{suffix}").is_file():
            return folder / f"{name}{suffix}"
    raise MissingFileError(f"{folder}: no reference label for {name}")
