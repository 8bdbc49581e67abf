"""The ``masam`` command line: one sub-command per step, its options generated from the settings
dataclasses (:mod:`masam.options`). Errors of the package (:class:`masam.errors.MasamError`) end
the command with one line ``masam CMD: error: ...`` and exit code 1; any other exception is a bug
and keeps its traceback."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path

from ._version import __version__
from .allocator import allocator_policy
from .data.config import CheckConfig, PrepareConfig, PreprocessConfig
from .data.labels import label_map_from_text
from .demo import DemoConfig
from .errors import InputError, MasamError
from .eval.config import EvaluateConfig, ReportConfig
from .infer.config import EnsembleConfig, PredictConfig
from .infer.postprocess import PostprocessConfig
from .model.config import ConvertConfig, ParamsConfig
from .options import add_settings, given_settings, settings_from
from .share.config import ExportConfig, InstallConfig
from .threads import ThreadConfig, apply_threads, busy_warning, default_workers, resolve_threads
from .train.config import TrainConfig, TrainSession, resolve_train_config, resume_train_config
from .train.feedback import end_summary


def _settings(cls: type, args: argparse.Namespace):
    return settings_from(cls, given_settings(cls, args))


def _cmd_convert(args: argparse.Namespace) -> None:
    from .model.checkpoint import convert_original

    c = _settings(ConvertConfig, args)
    model = convert_original(c.sam_checkpoint, c.weights, c.output, image_size=c.image_size, scale=c.scale)
    cfg = model.config
    print(
        f"wrote {c.output}: {cfg.arch}, {cfg.num_classes} classes, rank {cfg.rank}, scale {cfg.scale}, "
        f"image size {cfg.image_size}"
    )


def _cmd_params(args: argparse.Namespace) -> None:
    from .model import ModelConfig, build_model, count_parameters

    c = _settings(ParamsConfig, args)
    model = build_model(ModelConfig(c.arch, c.image_size, c.num_classes, c.rank))
    print(f"{'group':<16}{'total':>14}{'trainable':>14}")
    for group, counts in count_parameters(model).items():
        print(f"{group:<16}{counts['total']:>14,}{counts['trainable']:>14,}")


def _cmd_preprocess(args: argparse.Namespace) -> None:
    from .data import load_dataset, preprocess_dataset
    from .data.labels import merged_names
    from .data.preprocess import dataset_normalization

    c = _settings(PreprocessConfig, args)
    dataset = load_dataset(c.dataset, modality=c.modality)
    norm = dataset_normalization(dataset, c.ct_window, c.mri_percentile, c.mri_rule)
    label_map = label_map_from_text(c.merge_labels)
    if label_map:
        dataset = dataclasses.replace(dataset, labels=merged_names(dataset.labels, label_map))
    cache = preprocess_dataset(
        dataset, c.output, c.image_size, norm, progress=True, label_map=label_map,
        processes=c.processes,
    )
    print(f"preprocessed {len(dataset.training)} cases ({dataset.modality}) into {cache}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from .infer.predict_files import load_predictor, predict_inputs
    from .infer.shard import gather, process_group, rank_device
    from .share import resolved_models
    from .share.onnx_export import onnx_engine

    c = _settings(PredictConfig, args)
    engine, precision = (onnx_engine, "fp32") if c.engine == "onnxruntime" else (None, c.precision)
    with resolved_models(list(c.model), c.sam_checkpoint) as (models, sam), process_group(c.device) as (world, rank):
        predictor = load_predictor(
            models, sam, tta=c.tta, postprocessing=c.postprocessing, modality=c.modality,
            device=rank_device(c.device), batch_size=c.batch_size, precision=precision, stride=c.stack_stride,
            image_size=c.image_size, engine=engine,
        )  # fmt: skip
        if rank == 0:  # issue 28: the models used and the post-processing, before any work
            print("\n".join(predictor.description))
        report = predict_inputs(
            predictor, c.input, c.output, output_format=c.output_format, save_probabilities=c.save_probabilities,
            overlays=c.overlays, boxes_file=c.boxes, boxes_from_labels_dir=c.boxes_from_labels, progress=not c.quiet,
            num_parts=c.num_parts, part_id=c.part_id, series_uid=c.series,
        )  # fmt: skip
        reports = gather(report)
    if rank == 0:
        _print_predict_totals(reports, world, c.output)
    return 1 if any(r.failed for r in reports) else 0


def _print_predict_totals(reports: list, world: int, output: str) -> None:
    """Rank 0's summary of every rank's report (the torchrun test parses these lines): each
    skipped DICOM series with its reason, then one line of what was written and skipped."""
    skipped = {name: reason for r in reports for name, reason in r.skipped.items()}
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    written = [p for r in reports for p in r.written]
    line = f"wrote {len(written)} prediction(s) to {output}"
    if skipped:
        line += f" ({_names([p.name for p in written])}); skipped {len(skipped)} series ({_names(list(skipped))})"
    print(line)
    for i, r in enumerate(reports if world > 1 else []):
        print(f"rank {i}: {', '.join(p.name for p in r.written) or 'nothing'}")
    for name, reason in (item for r in reports for item in r.failed.items()):
        print(f"masam predict: failed: {name}: {reason}", file=sys.stderr)


def _names(names: list[str], most: int = 5) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "") or "none"


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from .eval import evaluate_folders, format_table, write_results
    from .infer.predict_files import stored_class_names

    c = _settings(EvaluateConfig, args)
    label_map = label_map_from_text(c.merge_labels)
    names = _class_names(c.dataset_json) if c.dataset_json else stored_class_names(c.pred)
    if names and label_map:  # classes merged away are not evaluated
        names = {v: n for v, n in names.items() if v not in label_map}
    classes = sorted(names) if names else None
    results = evaluate_folders(
        c.pred, c.ref, classes, names, nsd_tolerance=c.nsd_tolerance, label_map=label_map, at_size=c.at_size
    )
    json_path, csv_path = write_results(results, c.output)
    print(format_table(results))
    print(f"wrote {Path(json_path).absolute()} and {Path(csv_path).absolute()}")


def _class_names(dataset_json: str) -> dict[int, str]:
    """``{value: name}`` of the foreground classes in a dataset.json."""
    try:
        labels = json.loads(Path(dataset_json).read_text())["labels"]
        return {int(v): k for k, v in labels.items() if int(v) > 0}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{dataset_json}: cannot read the class names: {err}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import Interrupted, Trainer

    session = _settings(TrainSession, args)
    given = given_settings(TrainConfig, args)
    resolve = resume_train_config if given.get("resume") else resolve_train_config
    config = resolve(given, session.preset)
    if session.dry_run:
        from .train.dryrun import dry_run_text

        print(dry_run_text(config, given, session.preset))
        return 0
    trainer = Trainer(config, progress=not session.quiet, stop_after=session.stop_after, check_sync=session.check_sync)
    try:
        result = trainer.run()
    except Interrupted as stop:
        print(
            f"masam train: stopped by signal {stop.signum}; resumable state saved in {config.output}", file=sys.stderr
        )
        return 128 + stop.signum
    if trainer.is_main:
        if "stopped_at_step" in result:
            step = result["stopped_at_step"]
            print(f"stopped after step {step}; continue with: masam train -o {config.output} --resume")
        else:
            print(end_summary(config.output, result["steps"]))
    return 0


# issue 16: ensembles of saved probabilities, cross-validation post-processing, the HTML report
def _cmd_ensemble(args: argparse.Namespace) -> None:
    from .infer.ensemble import EnsembleError, ensemble_folders

    c = _settings(EnsembleConfig, args)
    try:
        written = ensemble_folders(list(c.input), c.output, c.file_ending, c.save_probabilities)
    except EnsembleError as err:
        raise InputError(str(err)) from None
    print(f"wrote {len(written)} ensembled prediction(s) to {c.output}")


def _cmd_postprocess(args: argparse.Namespace) -> None:
    from .infer.postprocess import postprocess_runs
    from .run_folder import runs_in

    c = _settings(PostprocessConfig, args)
    result = postprocess_runs([run.path for given in c.model for run in runs_in(given)])
    for run, value in result["folds"].items():
        print(f"fold {run}: validation mean Dice {value:.4f}")
    cv = result["cross_validation"]
    print(f"cross-validation mean Dice {cv['before']:.4f}; with post-processing {cv['after']:.4f}")
    print(f"keep largest component per class: {json.dumps(result['keep_largest_component'])}")


def _cmd_report(args: argparse.Namespace) -> None:
    from .eval.report import report_folders
    from .infer.predict_files import stored_class_names

    c = _settings(ReportConfig, args)
    names = _class_names(c.dataset_json) if c.dataset_json else stored_class_names(c.pred, c.run)
    page, _ = report_folders(c.images, c.pred, c.ref, c.output, c.run, names, c.nsd_tolerance)
    print(f"wrote {page}")


def _cmd_check(args: argparse.Namespace) -> int:
    from .data.check import check_dataset, format_report

    c = _settings(CheckConfig, args)
    report = check_dataset(c.dataset, processes=c.processes)
    print(format_report(report))
    return 0 if report.ok else 1


def _cmd_prepare(args: argparse.Namespace) -> None:
    from .data import prepare

    c = _settings(PrepareConfig, args)
    label_map = label_map_from_text(c.merge_labels) if c.merge_labels is not None else None
    if label_map is not None and c.dataset != "btcv":
        raise InputError("--merge-labels applies to btcv here; use it with masam train/preprocess/evaluate otherwise")
    if c.site and c.dataset != "prostate":
        raise InputError("--site applies to prostate only")
    try:
        if c.dataset == "btcv":
            out = prepare.prepare_btcv(c.source, c.destination, merge=label_map)
        elif c.dataset == "prostate":
            out = prepare.prepare_prostate(c.source, c.destination, sites=_sites(c.site))
        elif c.dataset == "pancreas":
            out = prepare.prepare_pancreas(c.source, c.destination)
        else:
            out = prepare.prepare_endovis(c.source, c.destination)
    except ValueError as err:
        raise InputError(str(err)) from None
    print(f"prepared {c.dataset} from {c.source} into {out}")


def _sites(pairs: tuple[str, ...] | None) -> dict[str, str] | None:
    """``("BIDMC=C", ...)`` -> ``{"BIDMC": "C", ...}``."""
    if not pairs:
        return None
    if not all("=" in p for p in pairs):
        raise InputError(f"--site takes FOLDER=LETTER pairs, got {' '.join(pairs)}")
    return dict(p.split("=", 1) for p in pairs)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .train import Interrupted

    c = _settings(DemoConfig, args)
    try:
        run_demo(c.output, iterations=c.iterations, train_cases=c.cases, seed=c.seed, device=c.device)
    except (Interrupted, KeyboardInterrupt) as stop:  # issue 28: one line, as masam train
        signum = getattr(stop, "signum", 2)
        kept = "are unchanged" if Path(c.output).exists() else "were not written"
        print(f"masam demo: stopped by signal {signum}; the demo results in {c.output} {kept}", file=sys.stderr)
        return 128 + signum
    return 0


# issue 26: one archive per model, installed and predicted with offline
def _cmd_export(args: argparse.Namespace) -> None:
    from .share.export import export_archive, export_card

    c = _settings(ExportConfig, args)
    if c.card_only:
        print(export_card(c))
        return
    if c.output is None:
        raise InputError("-o is needed: the archive to write (or --card-only to print the model card)")
    if c.format == "monai-bundle":
        from .share.monai_bundle import export_bundle

        path = export_bundle(c)
    else:
        path, _ = export_archive(c)
    print(f"wrote {path}")


def _cmd_install(args: argparse.Namespace) -> None:
    from .share import install_archive

    c = _settings(InstallConfig, args)
    target, manifest = install_archive(c.archive, c.name, c.models, c.force)
    print(f"installed {manifest.get('name')} into {target}; predict with: masam predict -m {target.name} -i ... -o ...")


T = ThreadConfig  # issue 28: every command that computes takes --threads

# name -> (help, settings dataclasses whose fields become options, handler)
COMMANDS: dict[str, tuple[str, tuple[type, ...], Callable[[argparse.Namespace], int | None]]] = {
    "convert": (
        "turn a fine-tuned file of the original MA-SAM code into masam's format", (ConvertConfig,), _cmd_convert
    ),
    "prepare": (
        "convert the paper's raw BTCV, prostate, EndoVis'18 or MSD-Pancreas downloads into masam's dataset layout",
        (PrepareConfig,), _cmd_prepare,
    ),
    "preprocess": (
        "read, normalise and resize a dataset once into a cache folder", (PreprocessConfig, T), _cmd_preprocess
    ),
    "predict": (
        "predict label maps for images, folders of images or video sequences", (PredictConfig, T), _cmd_predict
    ),
    "evaluate": (
        "Dice, HD95 and surface Dice of predictions against reference labels", (EvaluateConfig, T), _cmd_evaluate
    ),
    "ensemble": (
        "average saved probabilities of several models (nnUNetv2_ensemble)", (EnsembleConfig, T), _cmd_ensemble
    ),
    "postprocess": (
        "decide connected-component post-processing on the folds' validation predictions", (PostprocessConfig, T),
        _cmd_postprocess,
    ),
    "report": ("one self-contained HTML page: metrics, box plots, curves, overlays", (ReportConfig, T), _cmd_report),
    "check": (
        "read every case of a dataset and report all problems (exit code 1: not usable)", (CheckConfig, T), _cmd_check
    ),
    "train": ("fine-tune MA-SAM on a dataset in the nnU-Net layout", (TrainConfig, TrainSession, T), _cmd_train),
    "demo": ("generate a phantom dataset, train vit_tiny on the CPU, predict and evaluate", (DemoConfig, T), _cmd_demo),
    "export": (
        "write a trained model (every fold, settings, metrics, a model card) to one archive", (ExportConfig,),
        _cmd_export,
    ),
    "install": ("check a model archive and install it for masam predict -m NAME", (InstallConfig,), _cmd_install),
    "params": ("print total and trainable parameters per part of a model", (ParamsConfig,), _cmd_params),
}


TRAIN_EPILOG = "defaults shown: without a preset; masam train --preset NAME --help shows a preset's"


def build_parser(preset: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``preset``: the ``--preset`` of ``masam train``, whose values its help shows as
    the defaults (issue 28)."""
    from .train import PRESETS

    parser = argparse.ArgumentParser(prog="masam", description="MA-SAM for 3D medical images.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"masam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, classes, handler) in COMMANDS.items():
        shown = (preset, PRESETS[preset]) if name == "train" and preset in PRESETS else None
        epilog = None
        if name == "train":
            epilog = f"defaults shown: those of --preset {preset}" if shown else TRAIN_EPILOG
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=epilog)
        add_settings(p, *classes, preset=shown)
        p.set_defaults(func=handler)
    return parser


def _preset_in(argv: list[str]) -> str | None:
    """The value of ``--preset`` among the arguments, before they are parsed (for the help)."""
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--preset="):
            return arg.split("=", 1)[1]
    return None


def _set_threads(args: argparse.Namespace) -> None:
    """Issue 28: the threads of a command that computes (``--threads``, ``MASAM_THREADS``, else the
    cores less the loader workers), and a warning when other processes already keep the cores busy."""
    if ThreadConfig not in COMMANDS[args.command][1]:
        return
    workers = 0
    if args.command in ("train", "demo"):  # the demo trains with one loader worker
        given = getattr(args, "workers", None)
        workers = 1 if args.command == "demo" else (default_workers() if given is None else given)
    threads = resolve_threads(getattr(args, "threads", None), workers)
    apply_threads(threads)
    warning = busy_warning(threads + workers)
    if warning:
        print(f"masam {args.command}: warning: {warning}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_preset_in(argv)).parse_args(argv)
    with allocator_policy("reuse"):
        try:
            _set_threads(args)
            code = args.func(args)
        except MasamError as err:
            if args.debug:
                raise
            print(f"masam {args.command}: error: {err}", file=sys.stderr)
            return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
