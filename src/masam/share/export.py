"""``masam export``: a run folder (or a folder of fold runs) gathered into one model archive.

Archive layout (every member listed with its sha256 in ``manifest.json``)::

    manifest.json                     format, versions, model, input rules, folds, SAM base, metrics
    README.md                         the model card (Hugging Face front matter)
    dataset.json                      the training dataset's, when it can be read
    crossval.json                     cross-validation Dice per fold and class, when recorded
    sam_base.safetensors              SAM's frozen encoder tensors (only with --sam-weights include)
    folds/NAME/model_*.safetensors    each fold's designated weights
    folds/NAME/config.json            its training settings (machine-specific paths reduced to names)
    folds/NAME/postprocessing.json    its post-processing decision, progress.png, log.jsonl

The folder ``folds/`` is laid out as run folders, so that an installed archive is predicted with
by the same code as the run it came from.
"""

from __future__ import annotations

import datetime
import json
import statistics
import tempfile
from pathlib import Path

from .._version import __version__
from ..errors import CheckpointError, InputError, MissingFileError
from ..infer.postprocess import PostprocessingError, read_postprocessing
from ..model.masam_format import read_header
from ..model.sam_format import read_torch_file, save_sam_base
from ..run_folder import CONFIG, LOG, POSTPROCESSING, PROGRESS, RunFolder, find_weights, runs_in
from .archive import check_model_name, write_archive
from .card import model_card
from .config import ExportConfig

SAM_BASE = "sam_base.safetensors"
FOLDS = "folds"
# Settings that describe the machine, not the recipe: left out of the shared config.json.
_LOCAL_SETTINGS = ("output", "cache", "split_file", "workers", "device", "host_allocator", "resume",
                   "check_processes", "preprocess_processes", "check_dataset")  # fmt: skip


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read the {what}: {err}") from None


def fold_runs(run: str, folds: tuple[str, ...] | None = None) -> list[Path]:
    """The run folders of ``run`` (one run, or a folder of fold runs), those named by ``folds``
    (folder names or fold numbers) when given."""
    runs = [r for r in runs_in(run) if r.path.is_dir()]
    if not runs or not runs[0].config_file.is_file():
        raise MissingFileError(f"{run}: not a training run folder (config.json and model_*.safetensors)")
    if folds:
        runs = [r for r in runs if r.path.name in folds or str(r.train_settings().get("fold")) in folds]
        if not runs:
            raise InputError(f"{run}: no fold run named {' or '.join(folds)}")
    return [r.path for r in runs]


def shared_settings(config: dict) -> dict:
    """A run's ``config.json`` as it goes into an archive: machine-specific settings left out, paths
    (the dataset, SAM's checkpoint) reduced to their names."""
    train = {k: v for k, v in config.get("train", {}).items() if k not in _LOCAL_SETTINGS}
    for key in ("dataset", "sam_checkpoint"):
        if train.get(key):
            train[key] = Path(train[key]).name
    return {"train": train, "model": config.get("model", {})}


def _fold_members(run: Path) -> tuple[dict[str, bytes | Path], dict]:
    """The archive members of one fold run, and its entry in the manifest."""
    weights = find_weights(run)
    prefix = f"{FOLDS}/{run.name}"
    config = RunFolder(run).read_config()
    members: dict[str, bytes | Path] = {
        f"{prefix}/{weights.name}": weights,
        f"{prefix}/{CONFIG}": json.dumps(shared_settings(config), indent=1).encode(),
    }
    for name in (POSTPROCESSING, PROGRESS, LOG):
        if (run / name).is_file():
            members[f"{prefix}/{name}"] = run / name
    entry = {"name": run.name, "fold": config.get("train", {}).get("fold"), "weights": f"{prefix}/{weights.name}"}
    return members, entry


def _headers(runs: list[Path]) -> dict:
    """The first fold's weights header; every fold must share its model config and input rules."""
    headers = {run: read_header(find_weights(run)) for run in runs}
    first = headers[runs[0]]
    for run, header in headers.items():
        spec, first_spec = dict(header.get("input_spec") or {}), dict(first.get("input_spec") or {})
        spec.pop("intensity", None), first_spec.pop("intensity", None)  # each fold saw its own cases
        if header["config"] != first["config"] or spec != first_spec:
            raise InputError(f"{run}: model settings or input rules differ from {runs[0]}'s; export folds of one model")
        if header.get("base_fingerprint") != first.get("base_fingerprint"):
            raise InputError(f"{run}: fine-tuned from another SAM checkpoint than {runs[0]}")
    return first


def training_spacing(run: Path) -> dict | None:
    """Voxel spacings (x, y, z in mm, SimpleITK's order) of the training cases, from the run's
    cache (``CASE.json``): lowest, median and highest per axis; None when the cache is gone."""
    spacings = []
    for path in RunFolder(run).training_cache().records():
        try:
            spacings.append([float(v) for v in json.loads(path.read_text())["spacing"]])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    if not spacings:
        return None
    axes = list(zip(*spacings))
    return {"cases": len(spacings), "min": [min(a) for a in axes], "median": [statistics.median(a) for a in axes],
            "max": [max(a) for a in axes]}  # fmt: skip


def dataset_record(run: Path) -> dict | None:
    """The training dataset's ``dataset.json`` (found through the run's settings), or None."""
    name = RunFolder(run).train_settings().get("dataset")
    path = Path(name) / "dataset.json" if name else None
    if path is None or not path.is_file():
        return None
    return _read_json(path, "dataset description")


def sam_record(header: dict, runs: list[Path], mode: str, checkpoint: str | None) -> dict:
    """The manifest's ``sam`` entry: mode none (trained from scratch), reference (SAM's checkpoint
    named by its fingerprint and file name) or included (``sam_base.safetensors``)."""
    config = header["config"]
    if not config.get("pretrained_encoder", True):
        return {"mode": "none"}
    checkpoint = checkpoint or RunFolder(runs[0]).train_settings().get("sam_checkpoint")
    entry = {"arch": config["arch"], "fingerprint": header.get("base_fingerprint"),
             "file": Path(checkpoint).name if checkpoint else None}  # fmt: skip
    return {"mode": "reference", **entry} if mode == "reference" else {"mode": "included", "member": SAM_BASE, **entry}


def sam_entry(header: dict, runs: list[Path], mode: str, checkpoint: str | None, folder: Path) -> tuple[dict, dict]:
    """:func:`sam_record` and the members it adds: with mode include, SAM's frozen tensors written to
    ``folder/sam_base.safetensors``, checked against the weights' base fingerprint."""
    record = sam_record(header, runs, mode, checkpoint)
    if record["mode"] != "included":
        return record, {}
    checkpoint = checkpoint or RunFolder(runs[0]).train_settings().get("sam_checkpoint")
    if not checkpoint or not Path(checkpoint).is_file():
        raise MissingFileError(f"{runs[0]}: --sam-weights include needs the SAM checkpoint the model was tuned "
                               f"from (--sam-checkpoint; the run names {checkpoint})")  # fmt: skip
    written = save_sam_base(read_torch_file(checkpoint), folder / SAM_BASE)
    if record["fingerprint"] and written != record["fingerprint"]:
        raise CheckpointError(f"{checkpoint}: not the SAM checkpoint the model was fine-tuned from (base "
                              f"fingerprint {written[:12]}, the model's {record['fingerprint'][:12]})")  # fmt: skip
    return record, {SAM_BASE: folder / SAM_BASE}


def _validation_dice(run: Path) -> dict | None:
    """Mean Dice per class over the fold's ``validation/`` predictions against the dataset's labels;
    None when either is not there."""
    from ..eval.metrics import dice
    from ..infer.postprocess import fold_validation

    try:
        names, preds, refs, labels = fold_validation(run)
    except (InputError, MissingFileError, OSError, ValueError):
        return None
    classes = {name: value for name, value in labels.items() if value > 0}
    per_class = {n: statistics.fmean(dice(p == v, r == v) for p, r in zip(preds, refs)) for n, v in classes.items()}
    return {"source": "validation predictions", "cases": len(names), "dice": per_class}


def _logged_dice(run: Path) -> dict | None:
    """The fold's last validation in ``log.jsonl`` (Dice per class name), or None."""
    last = None
    try:
        lines = RunFolder(run).log_file.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "val_dice" in record:
            last = record
    if last is None:
        return None
    per_class = {k.removeprefix("val_dice_"): float(v) for k, v in last.items() if k.startswith("val_dice_")}
    return {"source": f"last validation in training (step {last.get('step')})", "dice": per_class}


def crossval_summary(runs: list[Path]) -> dict | None:
    """Dice per class of each fold (its validation predictions, else its training log), the mean
    over folds, and the post-processing's before/after Dice when ``masam postprocess`` ran."""
    folds = {run.name: _validation_dice(run) or _logged_dice(run) for run in runs}
    folds = {name: value for name, value in folds.items() if value}
    if not folds:
        return None
    classes = list(next(iter(folds.values()))["dice"])
    mean = {c: statistics.fmean(f["dice"][c] for f in folds.values() if c in f["dice"]) for c in classes}
    summary: dict = {"folds": folds, "mean": mean}
    decision = RunFolder(runs[0]).postprocessing_file
    if decision.is_file():
        summary["postprocessing"] = _read_json(decision, "post-processing").get("mean_dice")
    return summary


def build_manifest(config: ExportConfig, runs: list[Path], header: dict) -> dict:
    """Everything the manifest says about the model, less the SAM entry, folds and members."""
    model = header["config"]
    spec = header.get("input_spec") or {}
    dataset = dataset_record(runs[0])
    keep = ("name", "description", "reference", "licence", "license", "release", "channel_names", "labels",
            "numTraining", "file_ending")  # fmt: skip
    return {
        "name": config.name or (runs[0].parent if len(runs) > 1 else runs[0]).name,
        "masam_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "arch": model["arch"], "image_size": model["image_size"], "num_classes": model["num_classes"],
            "fact_rank": model["rank"], "fact_scale": model["scale"], "slices": model["slices"],
            "adapter_kernel": model.get("adapter_kernel"), "pretrained_encoder": model.get("pretrained_encoder"),
            "labels": model.get("label_names") or {},
        },
        "input": spec,
        "training_spacing": training_spacing(runs[0]),
        "training": shared_settings(RunFolder(runs[0]).read_config())["train"],
        "cross_validation": crossval_summary(runs),
        "postprocessing": _postprocessing(runs[0]),
        "dataset": {k: v for k, v in dataset.items() if k in keep} if dataset else None,
        "card": {"intended_use": config.intended_use, "training_data": config.training_data,
                 "limits": list(config.limits or ()), "license": config.license},
    }  # fmt: skip


def _postprocessing(run: Path) -> dict | None:
    path = RunFolder(run).postprocessing_file
    try:
        return {str(c): keep for c, keep in read_postprocessing(path).items()} if path.is_file() else None
    except PostprocessingError as err:
        raise InputError(str(err)) from None


def export_card(config: ExportConfig) -> str:
    """The model card the archive would hold (``masam export --card-only``)."""
    runs = fold_runs(config.run, config.folds)
    header = _headers(runs)
    manifest = build_manifest(config, runs, header)
    manifest["folds"] = [_fold_members(run)[1] for run in runs]
    manifest["sam"] = sam_record(header, runs, config.sam_weights, config.sam_checkpoint)
    return model_card(manifest)


def export_archive(config: ExportConfig) -> tuple[Path, dict]:
    """Write the model archive ``config.output`` (atomically); returns its path and manifest. With
    ``format`` onnx, each fold's ONNX graphs are added beside its weights."""
    runs = fold_runs(config.run, config.folds)
    header = _headers(runs)
    manifest = build_manifest(config, runs, header)
    check_model_name(manifest["name"], config.output)
    members: dict[str, bytes | Path] = {}
    manifest["folds"] = []
    for run in runs:
        fold_members, entry = _fold_members(run)
        members.update(fold_members)
        manifest["folds"].append(entry)
    if manifest["cross_validation"] is not None:
        members["crossval.json"] = json.dumps(manifest["cross_validation"], indent=1).encode()
    dataset = dataset_record(runs[0])
    if dataset is not None:
        members["dataset.json"] = json.dumps(dataset, indent=1).encode()
    with tempfile.TemporaryDirectory(prefix="masam-export-") as folder:
        manifest["sam"], sam_members = sam_entry(header, runs, config.sam_weights, config.sam_checkpoint, Path(folder))
        members.update(sam_members)
        if config.format == "onnx":
            manifest["onnx"], onnx_members = _onnx_members(runs, header, config.sam_checkpoint, Path(folder))
            members.update(onnx_members)
        members["README.md"] = model_card(manifest).encode()
        path = write_archive(config.output, members, manifest)
    return path, manifest


def _onnx_members(runs: list[Path], header: dict, checkpoint: str | None, folder: Path) -> tuple[dict, dict]:
    """Each fold's encoder and decoder graphs (:mod:`.onnx_export`), as archive members."""
    from ..model.checkpoint import load_model
    from .onnx_export import OPSET, export_graphs

    sam = None
    if header["config"].get("pretrained_encoder", True):
        sam = checkpoint or RunFolder(runs[0]).train_settings().get("sam_checkpoint")
        if not sam or not Path(sam).is_file():
            raise MissingFileError(f"{runs[0]}: --format onnx needs the SAM checkpoint the model was tuned from "
                                   f"(--sam-checkpoint; the run names {sam})")  # fmt: skip
    members, graphs = {}, []
    for run in runs:
        model = load_model(sam, find_weights(run))
        boxes = (model.metadata or {}).get("prompt") in ("box", "box+points")  # points: not in the graphs
        out = folder / "onnx" / run.name
        out.mkdir(parents=True)
        for path in export_graphs(model, out, boxes=boxes):
            members[f"{FOLDS}/{run.name}/{path.name}"] = path
            graphs.append(f"{FOLDS}/{run.name}/{path.name}")
    return {"opset": OPSET, "graphs": graphs, "precision": "fp32"}, members
