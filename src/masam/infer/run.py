"""``masam predict`` as a function: inputs found, predictions written with the input's geometry."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.channels import channel_files, read_channels
from ..data.dicom import SeriesInfo, find_series, is_dicom_folder, select_series, volume_from_series
from ..data.dicom_seg import DicomSegError, write_dicom_seg
from ..data.io import (
    FRAME_SUFFIXES,
    VOLUME_SUFFIXES,
    Volume,
    case_name,
    has_suffix,
    list_frames,
    read_label,
    scan_cases,
    slice_axis,
    write_label,
)
from ..data.slices import boxes_from_mask, labels_to_slices, to_slices
from ..errors import InputError, MasamError, MissingFileError, OutputError
from ..fileio import atomic_path
from .overlay import save_overlays
from .predictor import Prediction, Predictor


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def find_inputs(path: str | os.PathLike, series_uid: str | None = None) -> list[tuple[str, Path | SeriesInfo]]:
    """``(case name, path or DICOM series)`` for one image file, one frame folder, a folder of either,
    or a folder of DICOM series (each series a case named by its description and number;
    ``series_uid`` picks one). nnU-Net's channel suffix ``_0000`` is dropped from names; the files
    of other channels are found when the case is read."""
    path = Path(path)
    if path.is_file():
        return [(case_name(path.name, channel_suffix=False).removesuffix("_0000"), path)]
    if not path.is_dir():
        raise MissingFileError(f"{path}: no such file or folder")
    if series_uid is not None:
        series = select_series(path, series_uid)
        return [(series.case_name, series)]
    if list_frames(path):
        return [(path.name, path)]
    if has_suffix(path.name, VOLUME_SUFFIXES):
        raise InputError(f"{path}: is a folder, named like an image file")
    cases: list[tuple[str, Path | SeriesInfo]] = list(scan_cases(path, channel_suffix=True).items())
    if not cases and is_dicom_folder(path):
        cases = [(series.case_name, series) for series in find_series(path)]
    if not cases:
        raise MissingFileError(f"{path}: no images ({', '.join(VOLUME_SUFFIXES + FRAME_SUFFIXES)} or DICOM)")
    return cases


def read_input(item: Path | SeriesInfo, channels: tuple[str, ...] = ()) -> Volume:
    """One case of :func:`find_inputs` as a Volume: a DICOM series, or the files of every channel
    the model takes (``channels``: its input spec's names)."""
    if isinstance(item, SeriesInfo):
        if len(channels) > 1:
            raise InputError(f"{item.folder}: the model takes {len(channels)} channels; a DICOM series is one")
        return volume_from_series(item)
    return read_channels(channel_files(item, channels))


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


DICOM_SEG = "dicom-seg"  # --output-format value: a DICOM-SEG and a NIfTI label map (issue 15)


@dataclass
class _Outputs:
    """Where and what ``predict_inputs`` writes."""

    folder: Path
    output_format: str | None
    save_probabilities: bool
    overlays: bool

    def write(self, name: str, path: Path | SeriesInfo, result: Prediction, predictor: Predictor) -> Path:
        volume = result.volume
        seg = self.output_format == DICOM_SEG
        ending = ".nii.gz" if seg or isinstance(path, SeriesInfo) else _ending(path)
        target = self.folder / name if volume.is_video else self.folder / f"{name}{self.output_format or ending}"
        if seg:
            target = self.folder / f"{name}.nii.gz"
            self._write_seg(name, result, predictor)
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


    def _write_seg(self, name: str, result: Prediction, predictor: Predictor) -> Path:
        """Issue 15: ``--output-format dicom-seg``: ``NAME.dcm`` (a DICOM-SEG referencing the source
        series frame by frame; the NIfTI label map is written beside it)."""
        source = result.volume.source
        if not isinstance(source, SeriesInfo):
            raise InputError(f"{result.volume.path}: --output-format dicom-seg needs a DICOM series as input")
        config = predictor.model.config
        names = {v: k for k, v in (getattr(config, "label_names", None) or {}).items() if v > 0}
        classes = {c: names.get(c, f"class {c}") for c in range(1, config.num_classes + 1)}
        try:
            return write_dicom_seg(
                self.folder / f"{name}.dcm", result.labels, source, classes, model_name=predictor.model_name
            )
        except DicomSegError as err:
            raise OutputError(f"{self.folder / name}.dcm: cannot write the DICOM-SEG: {err}") from None


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
    series_uid: str | None = None,
) -> PredictReport:
    """Predict every case; a bad case is reported and skipped, the others still finish."""
    cases = find_inputs(inputs, series_uid)
    outputs = _Outputs(Path(output_dir), output_format, save_probabilities, overlays)
    try:
        outputs.folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{outputs.folder}: cannot create the output folder: {err.strerror}") from None
    all_boxes = _read_boxes_file(boxes_file)
    report = PredictReport()
    iterator = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="cases", unit="case")
    for name, path in iterator:
        try:
            volume = read_input(path, predictor.input_spec.channels if predictor.channels > 1 else ())
            boxes = _case_boxes(name, volume, all_boxes, boxes_file, boxes_from_labels_dir)
            result = predictor.predict(volume, boxes=boxes, return_probabilities=save_probabilities, progress=progress)
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
