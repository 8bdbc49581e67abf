"""The ``masam`` command line: one sub-command per step."""

from __future__ import annotations

import argparse
import json
import sys

from .allocator import TRAINING_POLICIES, configure_allocator
from .data.dataset import DatasetError
from .data.io import ImageReadError
from .model.checkpoint import CheckpointError
from .precision import PRECISION_CHOICES, PRECISIONS
from .train.trainer import TrainingError


def _cmd_convert(args: argparse.Namespace) -> None:
    from .model.checkpoint import convert_original

    model = convert_original(
        args.sam_checkpoint, args.weights, args.output, image_size=args.image_size, scale=args.scale
    )
    cfg = model.config
    print(
        f"wrote {args.output}: {cfg.arch}, {cfg.num_classes} classes, rank {cfg.rank}, scale {cfg.scale}, "
        f"image size {cfg.image_size}"
    )


def _cmd_params(args: argparse.Namespace) -> None:
    from .model import ModelConfig, build_model, count_parameters

    model = build_model(ModelConfig(args.arch, args.image_size, args.num_classes, args.rank))
    print(f"{'group':<16}{'total':>14}{'trainable':>14}")
    for group, counts in count_parameters(model).items():
        print(f"{group:<16}{counts['total']:>14,}{counts['trainable']:>14,}")


def _cmd_preprocess(args: argparse.Namespace) -> None:
    from .data import Normalization, load_dataset, preprocess_dataset

    dataset = load_dataset(args.dataset, modality=args.modality)
    norm = Normalization(dataset.modality, window=tuple(args.ct_window), percentile=args.mri_percentile)
    cache = preprocess_dataset(dataset, args.output, args.image_size, norm, progress=True, processes=args.processes)
    print(f"preprocessed {len(dataset.training)} cases ({dataset.modality}) into {cache}")


def _cmd_predict(args: argparse.Namespace) -> int:
    from .infer.predictor import MODES, Predictor
    from .infer.run import predict_inputs
    from .infer.shard import gather, process_group, rank_device

    stride = args.stride if args.stride is not None else MODES[args.mode]
    with process_group(args.device) as (world, rank):
        predictor = Predictor.from_files(
            args.model,
            args.sam_checkpoint,
            modality=args.modality,
            device=rank_device(args.device),
            batch_size=args.batch_size,
            precision=args.precision,
            stride=stride,
        )
        report = predict_inputs(
            predictor,
            args.input,
            args.output,
            output_format=args.output_format,
            save_probabilities=args.save_probabilities,
            overlays=args.overlays,
            boxes_file=args.boxes,
            boxes_from_labels_dir=args.boxes_from_labels,
            progress=not args.quiet,
            num_parts=args.num_parts,
            part_id=args.part_id,
        )
        reports = gather(report)
    if rank == 0:
        print(f"wrote {sum(len(r.written) for r in reports)} prediction(s) to {args.output}")
        for i, r in enumerate(reports if world > 1 else []):
            print(f"rank {i}: {', '.join(p.name for p in r.written) or 'nothing'}")
        for name, reason in (item for r in reports for item in r.failed.items()):
            print(f"masam predict: failed: {name}: {reason}", file=sys.stderr)
    return 1 if any(r.failed for r in reports) else 0


def _cmd_evaluate(args: argparse.Namespace) -> None:
    import json
    from pathlib import Path

    from .eval import evaluate_folders, format_table, write_results

    classes = names = None
    if args.dataset_json:
        labels = json.loads(Path(args.dataset_json).read_text())["labels"]
        names = {int(v): k for k, v in labels.items() if int(v) > 0}
        classes = sorted(names)
    results = evaluate_folders(args.pred, args.ref, classes, names, nsd_tolerance=args.nsd_tolerance)
    json_path, csv_path = write_results(results, args.output)
    print(format_table(results))
    print(f"wrote {json_path} and {csv_path}")


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import PAPER_PRESET, Interrupted, TrainConfig, Trainer

    values = TrainConfig().to_dict()
    if args.preset == "paper":
        values.update(PAPER_PRESET)
    for key in values:
        given = getattr(args, key, None)
        if given is not None:
            values[key] = given
    if args.sam_checkpoint is None and args.arch is None:
        raise ValueError("give --sam-checkpoint (fine-tune SAM) or --arch (train from random initialisation)")
    if args.iterations is not None and args.epochs is None:
        values["stop_epoch"] = None
    config = TrainConfig.from_dict(values)
    trainer = Trainer(config, progress=not args.quiet, stop_after=args.stop_after, check_sync=args.check_sync)
    try:
        result = trainer.run()
    except Interrupted as stop:
        print(
            f"masam train: stopped by signal {stop.signum}; resumable state saved in {config.output}", file=sys.stderr
        )
        return 128 + stop.signum
    if trainer.is_main:
        print(f"finished: {json.dumps(result)}; run folder {config.output}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.output, iterations=args.iterations, train_cases=args.cases, seed=args.seed, device=args.device)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="masam", description="MA-SAM for 3D medical images.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="turn a fine-tuned file of the original MA-SAM code into masam's format")
    p.add_argument("--sam-checkpoint", required=True, help="the SAM .pth the original model was fine-tuned from")
    p.add_argument("--weights", required=True, help="the original MA-SAM .pth (q_FacTs_000, ...)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors file")
    p.add_argument("--image-size", type=int, default=512, help="image size the model was trained at (default 512)")
    p.add_argument("--scale", type=float, default=1.0, help="FacT scale s used in training (default 1.0)")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("preprocess", help="read, normalise and resize a dataset once into a cache folder")
    p.add_argument("-d", "--dataset", required=True, help="dataset folder in the nnU-Net raw layout")
    p.add_argument("-o", "--output", required=True, help="cache folder to write")
    p.add_argument("--image-size", type=int, default=512, help="model input size (default 512)")
    p.add_argument("--modality", default=None, help="CT, MRI or RGB (default: dataset.json's channel name)")
    p.add_argument(
        "--ct-window",
        type=float,
        nargs=2,
        default=(-200.0, 250.0),
        metavar=("LOW", "HIGH"),
        help="CT intensity window in HU (default -200 250, the paper's abdomen window)",
    )
    p.add_argument("--mri-percentile", type=float, default=99.0, help="MRI upper clip percentile (default 99)")
    p.add_argument("--processes", type=int, default=1, help="cases preprocessed at once, each in a process (default 1)")
    p.set_defaults(func=_cmd_preprocess)

    p = sub.add_parser("predict", help="predict label maps for images, folders of images or video sequences")
    p.add_argument("-m", "--model", required=True, help="a run folder (its best model) or a weights file")
    p.add_argument("-i", "--input", required=True, help="an image, a folder of images, or a video frame folder")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--sam-checkpoint", default=None, help="SAM base checkpoint the model was fine-tuned from")
    p.add_argument("--modality", default=None, help="CT, MRI or RGB (default: stored with the model)")
    p.add_argument(
        "--output-format", default=None, help="output extension, e.g. .nii.gz or .nrrd (default: the input's)"
    )
    p.add_argument("--save-probabilities", action="store_true", help="also write CASE_probabilities.npz (float16)")
    p.add_argument("--overlays", action="store_true", help="write PNG slices with class contours to OUTPUT/overlays")
    p.add_argument("--boxes", default=None, help="JSON {case: {slice: [x0, y0, x1, y1]}} box prompts, voxel units")
    p.add_argument("--boxes-from-labels", default=None, help="derive one box per slice from the labels in this folder")
    p.add_argument("--batch-size", type=int, default=2, help="stacks per forward pass (default 2)")
    p.add_argument(
        "--mode", choices=["faithful", "fast"], default="faithful",
        help="faithful: every slice the centre of a stack (the paper's); fast: 5x fewer stacks, each slice once",
    )  # fmt: skip
    p.add_argument("--stride", type=int, default=None, help="slices between stack centres (overrides --mode)")
    p.add_argument(
        "--precision", default="auto", choices=list(PRECISION_CHOICES),
        help="compute precision (default auto: bf16 where the CPU or GPU computes it natively, else fp32)",
    )  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--num-parts", type=int, default=1, help="split the sorted cases into this many parts (default 1)")
    p.add_argument("--part-id", type=int, default=0, help="predict part I of --num-parts: cases[I::K] (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("evaluate", help="Dice, HD95 and surface Dice of predictions against reference labels")
    p.add_argument("-p", "--pred", required=True, help="folder of predicted label maps")
    p.add_argument("-r", "--ref", required=True, help="folder of reference label maps (same case names)")
    p.add_argument("-o", "--output", default="metrics.json", help="JSON output; a CSV is written beside it")
    p.add_argument("--nsd-tolerance", type=float, default=2.0, help="surface Dice tolerance in mm (default 2)")
    p.add_argument("--dataset-json", default=None, help="dataset.json, for class names and the list of classes")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("train", help="fine-tune MA-SAM on a dataset in the nnU-Net layout")
    p.add_argument("-d", "--dataset", required=True, help="dataset folder (nnU-Net raw layout, or video sequences)")
    p.add_argument("-o", "--output", required=True, help="run folder for models, state, logs and the cache")
    p.add_argument("--sam-checkpoint", default=None, help="official SAM .pth to fine-tune (arch read from it)")
    p.add_argument("--arch", default=None, help="vit_b, vit_l, vit_h or vit_tiny, randomly initialised (no SAM)")
    p.add_argument(
        "--preset", choices=["paper"], default=None, help="the paper's values (batch 24 at 512, lr 8e-4, ...)"
    )
    p.add_argument("--modality", default=None, help="CT, MRI or RGB (default: dataset.json's channel name)")
    p.add_argument(
        "--ct-window",
        type=float,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="CT window in HU (default -200 250)",
    )
    p.add_argument("--mri-percentile", type=float, default=None, help="MRI upper clip percentile (default 99)")
    p.add_argument("--epochs", type=int, default=None, help="epochs in the schedule (default 400)")
    p.add_argument("--stop-epoch", type=int, default=None, help="stop early at this epoch (default 300, as the paper)")
    p.add_argument("--iterations", type=int, default=None, help="optimizer steps to run instead of epochs")
    p.add_argument("--batch-size", type=int, default=None, help="stacks per step and process (default 24)")
    p.add_argument("--accumulate", type=int, default=None, help="micro-batches per optimizer step (default 1)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 8e-4)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 250)")
    p.add_argument("--power", type=float, default=None, help="exponent of the polynomial decay (default 7)")
    p.add_argument("--slices", type=int, default=None, help="slices per stack (default 5)")
    p.add_argument("--image-size", type=int, default=None, help="model input size, a multiple of 16 (default 512)")
    p.add_argument("--rank", type=int, default=None, help="FacT rank (default 32)")
    p.add_argument("--scale", type=float, default=None, help="FacT scale s (default 1.0)")
    p.add_argument("--adapter-kernel", type=int, default=None, help="adapter taps over slices; 1 = 2D only (default 3)")
    p.add_argument(
        "--prompt", choices=["none", "box"], default=None, help="prompt-free, or one box per slice (default none)"
    )
    p.add_argument(
        "--no-augment", dest="augment", action="store_const", const=False, default=None, help="switch augmentation off"
    )
    p.add_argument("--exclude-background", dest="include_background", action="store_const", const=False, default=None,
                   help="leave the background out of the Dice loss (the original includes it)")  # fmt: skip
    p.add_argument("--fact-dropout", type=float, default=None, help="dropout on the FacT path (default 0.1)")
    p.add_argument("--val-every", type=int, default=None, help="epochs between validations; 0 = none (default 20)")
    p.add_argument("--val-fraction", type=float, default=None, help="share of cases held out (default 0.2)")
    p.add_argument("--split-file", default=None, help="JSON {train: [...], val: [...]} instead of a seeded split")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 1234)")
    p.add_argument("--precision", choices=list(PRECISIONS), default=None, help="fp16 needs CUDA (default fp32)")
    p.add_argument(
        "--grad-checkpoint", action="store_const", const=True, default=None, help="recompute encoder blocks in backward"
    )
    p.add_argument(
        "--host-allocator",
        choices=["auto", *TRAINING_POLICIES],
        default=None,
        help="host memory policy: lean returns large blocks to the system (less memory, slower), reuse keeps "
        "them (faster), lean-forward is lean in the forward pass only (default auto: lean with "
        "--grad-checkpoint, else lean-forward)",
    )
    p.add_argument("--workers", type=int, default=None, help="data-loader workers per process (default 2)")
    p.add_argument("--processes", dest="preprocess_processes", type=int, default=None,
                   help="cases preprocessed at once into the cache, each in a process (default 1)")  # fmt: skip
    p.add_argument("--device", default=None, help="cpu, cuda (default cpu)")
    p.add_argument("--save-every", type=int, default=None, help="steps between resumable states (default: each epoch)")
    p.add_argument("--resume", action="store_const", const=True, default=None, help="continue the run in --output")
    p.add_argument(
        "--stop-after", type=int, default=None, help="save a resumable state and stop after N steps of this run"
    )
    p.add_argument("--check-sync", action="store_true", help="(debugging) verify that all ranks hold the same weights")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("demo", help="generate a phantom dataset, train vit_tiny on the CPU, predict and evaluate")
    p.add_argument("-o", "--output", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--iterations", type=int, default=600, help="training steps (default 600)")
    p.add_argument("--cases", type=int, default=16, help="training cases to generate (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("params", help="print total and trainable parameters per part of a model")
    p.add_argument("--arch", default="vit_b", help="vit_b, vit_l, vit_h or vit_tiny (default vit_b)")
    p.add_argument("--image-size", type=int, default=512, help="input size (default 512)")
    p.add_argument("--num-classes", type=int, default=4, help="foreground classes (default 4)")
    p.add_argument("--rank", type=int, default=32, help="FacT rank (default 32)")
    p.set_defaults(func=_cmd_params)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_allocator("reuse")
    try:
        code = args.func(args)
    except (CheckpointError, DatasetError, ImageReadError, TrainingError, ValueError, RuntimeError, OSError) as err:
        if args.debug:
            raise
        print(f"masam {args.command}: error: {err}", file=sys.stderr)
        return 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
