"""``masam predict`` on files: the models named by ``-m`` loaded, inputs found and read, predictions
written with the input's geometry (and overlays, probabilities, DICOM-SEG)."""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
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
from ..eval.drawing import volume_panels
from ..fileio import atomic_path
from ..run_folder import RunFolder, find_weights, is_folder_of_runs, runs_in
from .boxes import Prompt, read_boxes_file
from .predictor import Prediction, Predictor
from .shard import distributed_part, select_part


@dataclass
class PredictReport:
    written: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # issue 28: DICOM series that are no volume


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
    (:func:`masam.eval.drawing.volume_panels`: radiological orientation, class contours)."""
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


def check_prompt_cases(boxes_file, names: list[str]) -> None:
    """Issue 28: every case of the prompt file must be among the inputs (all of them, not only this
    part's); a misspelt name is an error naming the file and the case, before any work."""
    if boxes_file is None:
        return
    unknown = sorted(set(read_boxes_file(boxes_file)) - set(names))
    if unknown:
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; the inputs are {', '.join(sorted(names)[:5])}"
        more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
        raise InputError(f"{boxes_file}: case {unknown[0]!r}{more} is not among the inputs{hint}")


def check_prompts_given(predictor: Predictor, boxes_file, labels_dir) -> None:
    """Issue 28: a box-only model (trained with box prompts and no prompt dropout) finds almost
    nothing without a box, so running it without a prompt source is refused; and prompts reach one
    model unmirrored, so they are refused with an ensemble or --tta rather than used by one model."""
    prompted = boxes_file is not None or labels_dir is not None
    if prompted and predictor.probs_fn is not None:
        what = f"an ensemble of {predictor.ensemble_size} models" if predictor.ensemble_size > 1 else "--tta"
        raise InputError(f"box prompts reach one model without mirroring, not {what}; give one model without --tta")
    if predictor.segments_unprompted or prompted:
        return
    raise InputError(
        f"model {predictor.model_name}: trained with box prompts only (no --prompt-dropout), it segments almost "
        "nothing without a box; give --boxes FILE or --boxes-from-labels FOLDER"
    )


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

    The prompt options are checked against the model and the inputs first. Only part ``part_id`` of
    ``num_parts`` of the cases is predicted, and under torchrun only this rank's share of it (see
    :mod:`masam.infer.shard`)."""
    cases = find_inputs(inputs, series_uid)
    check_prompts_given(predictor, options.get("boxes_file"), options.get("boxes_from_labels_dir"))
    check_prompt_cases(options.get("boxes_file"), [name for name, _ in cases])
    cases = select_part(select_part(cases, num_parts, part_id), *distributed_part())
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
    prompts = read_boxes_file(boxes_file) if boxes_file is not None else {}
    report = PredictReport()
    iterator = cases
    if progress:
        from tqdm import tqdm

        iterator = tqdm(cases, desc="cases", unit="case")
    for name, path in iterator:
        if isinstance(path, SeriesInfo) and path.skip_reason is not None:
            report.skipped[name] = path.skip_reason
            continue
        try:
            volume = read_input(path, predictor.input_spec.channels[: predictor.channels])
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
    labels = {str(k): int(v) for k, v in (config.label_names or {}).items()}  # issue 28: names beside predictions
    return {"arch": config.arch, "num_classes": config.num_classes, "digest": digest.hexdigest()[:16], "labels": labels}


def stored_class_names(predictions=None, run=None) -> dict[int, str] | None:
    """Issue 28: ``{value: name}`` of the foreground classes as the model stores them: the model of
    ``run`` (a run folder or weights file), else the marker ``masam predict`` leaves beside its
    ``predictions``; None when neither names them."""
    from ..model.masam_format import read_header

    labels = None
    if run is not None:
        try:
            labels = read_header(find_weights(run))["config"].get("label_names")
        except (MasamError, OSError):  # a run without a masam model (e.g. only curves): other sources
            labels = None
    if not labels and predictions is not None and (Path(predictions) / MARKER).is_file():
        try:
            labels = json.loads((Path(predictions) / MARKER).read_text()).get("labels")
        except (OSError, ValueError, AttributeError):
            labels = None
    names = {int(v): str(k) for k, v in (labels or {}).items() if int(v) > 0}
    return names or None


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
    """The weights files named by ``-m``: files as given, and the model each run folder designates
    (``predict_with``, :meth:`RunFolder.model`); a folder of the fold runs of one cross-validation
    stands for all of them (:func:`masam.run_folder.runs_in`)."""
    return [find_weights(run.path) for path in paths for run in runs_in(path)]


def describe_models(given: list[str | os.PathLike], paths: list[Path]) -> str:
    """One line naming the models a prediction uses, e.g. ``models: 2 folds of runs
    (runs/fold_0/model_best.safetensors, ...), probabilities averaged``."""
    files = ", ".join(str(p) for p in paths)
    if len(paths) == 1:
        return f"model: {files}"
    folds = [Path(g) for g in given if is_folder_of_runs(g)]
    what = f"{len(paths)} models"
    if folds and len(given) == 1:
        what = f"{len(paths)} folds of {folds[0]}"
    return f"models: {what} ({files}), softmax probabilities averaged"


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
    from .ensemble import EnsembleError, mean_probs_fn, model_spec, refuse_incompatible, volume_probs_fn
    from .postprocess import PostprocessingError, read_postprocessing
    from .tta import mirrored

    named = [run.path for path in models for run in runs_in(path)]  # as given: the names in messages
    paths = model_paths(models)
    predictors = [Predictor.from_files(p, sam_checkpoint, **kwargs) for p in paths]
    for path, predictor in zip(paths, predictors):
        predictor.engine = engine(path) if engine is not None else None
    main = predictors[0]
    try:
        refuse_incompatible({str(n): model_spec(pr.model) for n, pr in zip(named, predictors)})
    except EnsembleError as err:
        raise InputError(str(err)) from None
    if len(predictors) > 1:
        main.probs_fn = mean_probs_fn([volume_probs_fn(p) for p in predictors])
    if tta:
        main.probs_fn = mirrored(main.probs_fn or volume_probs_fn(main), slice_flip=True)
    decision_file = RunFolder(paths[0].parent).postprocessing_file
    if postprocessing and decision_file.is_file():
        try:
            main.postprocessing = read_postprocessing(decision_file)
        except PostprocessingError as err:
            raise InputError(str(err)) from None
    main.ensemble_size = len(predictors)
    main.description = [describe_models(models, paths), _describe_postprocessing(main, postprocessing, decision_file)]
    return main


def _describe_postprocessing(predictor: Predictor, asked: bool, decision_file: Path) -> str:
    """Issue 28: whether ``postprocessing.json`` applies, said in one line."""
    if not asked:
        return "post-processing: off (--no-postprocessing)"
    if predictor.postprocessing is None:
        return f"post-processing: none ({decision_file.parent} has no {decision_file.name})"
    kept = [str(c) for c, keep in sorted(predictor.postprocessing.items()) if keep]
    what = f"largest component kept for class(es) {', '.join(kept)}" if kept else "every component kept"
    return f"post-processing: {what} ({decision_file})"


def write_result(path: str | os.PathLike, result: Prediction, predictor: Predictor) -> Path:
    """One label map written as ``masam predict`` writes it (issue 22: the interactive session's
    save): NIfTI, NRRD or MHA by the name's ending, or a DICOM-SEG (``.dcm``, with the NIfTI map
    beside it) for a DICOM series input."""
    path = Path(path)
    name = path.name
    if name.lower().endswith(".dcm"):
        return _Outputs(path.parent, DICOM_SEG, False, False).write(name[:-4], result.volume.source, result, predictor)
    ending = _ending(path)
    if not name.lower().endswith(ending):
        raise OutputError(f"{path}: name a label file ending in {', '.join(VOLUME_SUFFIXES)} or .dcm")
    return _Outputs(path.parent, ending, False, False).write(name[: -len(ending)], path, result, predictor)
