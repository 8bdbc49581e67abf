"""``masam predict`` as a function: inputs found, predictions written with the input's geometry."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
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
from ..data.slices import boxes_from_mask, labels_to_slices
from ..errors import InputError, MasamError, MissingFileError, OutputError
from ..fileio import atomic_path
from .boxes import Prompt, read_boxes_file
from .drawing import volume_panels
from .predictor import Prediction, Predictor
from .shard import distributed_part, select_part


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
            _write_overlays(self.folder / "overlays", name, result, predictor)
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



def _write_overlays(folder: Path, name: str, result: Prediction, predictor: Predictor) -> None:
    """``NAME_sliceNNN.png`` drawings of the chosen slices, as the HTML report draws them
    (:func:`masam.infer.drawing.volume_panels`: radiological orientation, class contours)."""
    import matplotlib.image

    names = predictor.model.config.label_names or {}
    classes = {int(v): k for k, v in names.items() if int(v) > 0} if names else {}
    classes = classes or {c: str(c) for c in range(1, predictor.model.config.num_classes + 1)}
    folder.mkdir(parents=True, exist_ok=True)
    for i, (rgb, _caption) in enumerate(volume_panels(result.volume, result.labels, None, classes)):
        with atomic_path(folder / f"{name}_{i:02d}.png") as tmp:
            matplotlib.image.imsave(tmp, rgb, format="png")


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
    num_parts: int = 1,
    part_id: int = 0,
    series_uid: str | None = None,
    **options,
) -> PredictReport:
    """Predict every case found in ``inputs`` (:func:`find_inputs`); ``options`` as :func:`predict_cases`.

    Only part ``part_id`` of ``num_parts`` of the cases is predicted, and under torchrun only this
    rank's share of it (see :mod:`masam.infer.shard`)."""
    cases = select_part(select_part(find_inputs(inputs, series_uid), num_parts, part_id), *distributed_part())
    return predict_cases(predictor, cases, output_dir, **options)


def predict_cases(
    predictor: Predictor,
    cases: list[tuple[str, Path]],
    output_dir: str | os.PathLike,
    *,
    output_format: str | None = None,
    save_probabilities: bool = False,
    overlays: bool = False,
    boxes_file: str | os.PathLike | None = None,
    boxes_from_labels_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> PredictReport:
    """Predict ``(name, path)`` cases; a bad case is reported and skipped, the others still finish."""
    outputs = _Outputs(Path(output_dir), output_format, save_probabilities, overlays)
    marker = _claim_folder(outputs.folder, predictor)
    prompts = _read_prompts(boxes_file, [name for name, _ in cases])
    report = PredictReport()
    iterator = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="cases", unit="case")
    for name, path in iterator:
        try:
            volume = read_input(path, predictor.input_spec.channels if predictor.channels > 1 else ())
            boxes = _case_boxes(name, volume, prompts, boxes_from_labels_dir, predictor.box_label)
            result = predictor.predict(
                volume, boxes=boxes, return_probabilities=save_probabilities, progress=progress,
                where=f"{boxes_file}: case {name!r}",
            )  # fmt: skip
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


def model_paths(paths: list[str | os.PathLike]) -> list[Path]:
    """The models named by ``-m``: weights files and run folders as given; a folder holding run
    folders (e.g. ``fold_0`` ... ``fold_4``) stands for all of them."""
    out = []
    for path in map(Path, paths):
        weights = ("model_best.safetensors", "model_last.safetensors")
        if path.is_dir() and not any((path / w).is_file() for w in weights):
            runs = sorted(p for p in path.iterdir() if p.is_dir() and any((p / w).is_file() for w in weights))
            if runs:
                out.extend(runs)
                continue
        out.append(path)
    return out


def load_predictor(
    models: list[str | os.PathLike],
    sam_checkpoint: str | os.PathLike | None = None,
    *,
    tta: bool = False,
    postprocessing: bool = True,
    engine=None,
    **kwargs,
) -> Predictor:
    """The predictor of ``masam predict``: one model, or an ensemble whose softmax probabilities are
    averaged before the argmax (models must share classes and input spec), with test-time mirroring
    when ``tta``, and the run's ``postprocessing.json`` applied when ``postprocessing`` and present
    (read beside the first model). ``engine``: None (PyTorch), or a function from a model path to
    the forward function each predictor runs instead (:attr:`Predictor.engine`, issue 26).
    ``kwargs``: as :meth:`Predictor.from_files`."""
    from .ensemble import EnsembleError, check_compatible, mean_probs_fn, model_spec, volume_probs_fn
    from .postprocess import POSTPROCESSING_FILE, PostprocessingError, read_postprocessing
    from .predictor import find_weights
    from .tta import mirrored

    paths = model_paths(models)
    predictors = [Predictor.from_files(p, sam_checkpoint, **kwargs) for p in paths]
    for path, predictor in zip(paths, predictors):
        predictor.engine = engine(path) if engine is not None else None
    main = predictors[0]
    try:
        check_compatible({str(p): model_spec(pr.model) for p, pr in zip(paths, predictors)})
    except EnsembleError as err:
        raise InputError(str(err)) from None
    if len(predictors) > 1:
        main.probs_fn = mean_probs_fn([volume_probs_fn(p) for p in predictors])
    if tta:
        main.probs_fn = mirrored(main.probs_fn or volume_probs_fn(main), slice_flip=True)
    decision_file = find_weights(paths[0]).parent / POSTPROCESSING_FILE
    if postprocessing and decision_file.is_file():
        try:
            main.postprocessing = read_postprocessing(decision_file)
        except PostprocessingError as err:
            raise InputError(str(err)) from None
    return main
