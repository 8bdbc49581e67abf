"""Prompted segmentation (issue 14): Dice of the lesion for each way a user can prompt.

For each task (benchmarks/lesion_data.py: ``synthetic``, ``brats``, ``deeplesion``) it trains five
vit_tiny models the project's way:

- ``no_prompt``: no boxes (the automatic baseline);
- ``box``: one box per slice around the lesion (``--prompt box --box-label L``; the original's
  per-slice-box protocol, which boxed all foreground, is the paper's baseline);
- ``box_3d``: as ``box`` with ``--box-3d 0.5``: half the stacks are prompted the way a 3D box prompts them
  (one box around the target of the whole stack, on every slice, empty slices included), so that
  the model learns loose boxes and boxes with nothing inside, where a propagated box must stop;
- ``dropout``: as ``box_3d`` with ``--prompt-dropout 0.5``, one model for automatic and prompted use;
- ``box_empty``: as ``box_3d`` with ``--box-empty 0.5``: half the stacks without the lesion get
  another stack's box, a box with nothing inside;

then predicts the test cases with every mode: ``automatic`` (no boxes), ``slice_boxes`` (a box on
every slice from the reference), ``box_3d`` (one 3D box: the reference's bounding box) and
``propagate`` (one box on the lesion's largest slice, propagated), each prompt jittered by 0, 10
and 20% of its box's size. Writes ``benchmarks/results/prompts_TASK.json`` with the Dice per case, the
means, and the ratios the issue asks for, one file per task.

Needs the CLI flags ``train --box-label N --prompt-dropout P`` and ``predict --boxes FILE`` with
the 3D and propagated forms (masam.infer.boxes). Run by hand, on a GPU for the full schedule:
``python benchmarks/prompts.py --device cuda``; ``--tasks synthetic --iterations 50`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from lesion_data import LESION_CONTRAST, write_brats_dataset, write_deeplesion_dataset, write_lesion_dataset
from results_file import write_result  # the sibling module in benchmarks/

from masam.data import read_label, read_volume, slice_axis
from masam.data.slices import labels_to_slices
from masam.eval import dice
from masam.infer.boxes import Box3D, Prompt, PropagatedBox, SliceBoxes, mask_box, volume_shape
from masam.infer.predict_files import boxes_from_labels

MODES = ("automatic", "slice_boxes", "box_3d", "propagate")
JITTERS = (0.0, 0.1, 0.2)
# task: (writer, lesion label, image size, extra training flags, default iterations)
TASKS = {
    # 128 px, not the images' 64: at 64 (4x4 tokens) vit_tiny drew the box's shape wherever it was
    # given one and never saw the lesion, so a propagated box could not stop
    "synthetic": (write_lesion_dataset, 2, 128, [], 1200),
    "brats": (write_brats_dataset, 2, 128, [], 3000),
    "deeplesion": (write_deeplesion_dataset, 1, 128, ["--ct-window", "0", "255"], 1000),
}
MODELS = {
    "no_prompt": lambda label: [],
    "box": lambda label: ["--prompt", "box", "--box-label", str(label)],
    "box_3d": lambda label: [*MODELS["box"](label), "--box-3d", "0.5"],
    "dropout": lambda label: [*MODELS["box_3d"](label), "--prompt-dropout", "0.5"],
    "box_empty": lambda label: [*MODELS["box_3d"](label), "--box-empty", "0.5"],
}
RUNS = {  # which modes each model is asked for: a box-only model has no automatic mode
    "no_prompt": ("automatic",),
    "box": ("slice_boxes", "box_3d", "propagate"),
    "box_3d": ("slice_boxes", "box_3d", "propagate"),
    "dropout": MODES,
    "box_empty": ("slice_boxes", "box_3d", "propagate"),
}


def reference_prompts(label: np.ndarray, axis: int, target: int) -> dict[str, Prompt]:
    """The three prompts a reference ``[z, y, x]`` gives for class ``target``: a box on every slice
    with the target, its 3D bounding box (voxel), and a box on its largest slice to propagate."""
    mask = label == target
    if not mask.any():
        raise ValueError(f"the reference has no class {target}")
    per_slice = boxes_from_labels(mask.astype(np.uint8), axis)
    zyx = np.argwhere(mask)
    low, high = zyx.min(0)[::-1], zyx.max(0)[::-1]  # to (x, y, z)
    slices = labels_to_slices(mask, axis)
    largest = int(slices.reshape(slices.shape[0], -1).sum(1).argmax())
    return {
        "slice_boxes": SliceBoxes({i: tuple(b) for i, b in per_slice.items()}),
        "box_3d": Box3D((*map(float, low), *map(float, high)), "voxel"),
        "propagate": PropagatedBox(largest, tuple(mask_box(slices[largest]))),
    }


def jitter_box(box, fraction: float, rng: np.random.Generator, limits) -> tuple[float, ...]:
    """Each side of ``box`` (lows then highs) moved by a uniform amount of up to ``fraction`` of
    the box's extent along it, rounded to voxels and kept inside ``0..limits`` (highest index per
    dimension) and non-empty."""
    box = np.asarray(box, float)
    half = len(box) // 2
    low, high = box[:half], box[half:]
    reach = fraction * (high - low + 1)
    low = np.rint(low + rng.uniform(-1, 1, half) * reach)
    high = np.rint(high + rng.uniform(-1, 1, half) * reach)
    limits = np.asarray(limits, float)
    low, high = np.clip(low, 0, limits), np.clip(high, 0, limits)
    low, high = np.minimum(low, high), np.maximum(low, high)
    return tuple(float(v) for v in (*low, *high))


def jitter_prompt(prompt: Prompt, fraction: float, rng: np.random.Generator, volume, axis: int) -> Prompt:
    """``prompt`` with every box jittered (:func:`jitter_box`); slice boxes each on their own."""
    size = np.asarray(volume_shape(volume)) - 1  # highest index (x, y, z)
    rows_cols = [a for a in range(3) if a != axis]
    slice_limits = (size[2 - rows_cols[1]], size[2 - rows_cols[0]])  # (x, y) of the slice frame
    if isinstance(prompt, Box3D):
        return Box3D(jitter_box(prompt.box, fraction, rng, size), prompt.space)
    if isinstance(prompt, PropagatedBox):
        return PropagatedBox(prompt.slice, jitter_box(prompt.box, fraction, rng, slice_limits))
    return SliceBoxes({i: jitter_box(b, fraction, rng, slice_limits) for i, b in prompt.boxes.items()})


def prompt_json(prompt: Prompt) -> dict:
    """The ``--boxes`` JSON form of one case's prompt."""
    if isinstance(prompt, Box3D):
        return {"box": list(prompt.box), "space": prompt.space}
    if isinstance(prompt, PropagatedBox):
        return {"slice": prompt.slice, "box": list(prompt.box), "propagate": True}
    return {str(i): list(b) for i, b in prompt.boxes.items()}


def write_boxes_files(dataset: Path, target: int, folder: Path, seed: int) -> dict[tuple[str, float], Path]:
    """One ``--boxes`` JSON per (mode, jitter) for the test cases of ``dataset``."""
    folder.mkdir(parents=True, exist_ok=True)
    forms: dict[tuple[str, float], dict] = {}
    rng = np.random.default_rng(seed)
    for ref in sorted((dataset / "labelsTs").glob("*.nii.gz")):
        name = ref.name[: -len(".nii.gz")]
        image = read_volume(dataset / "imagesTs" / f"{name}_0000.nii.gz")
        axis = slice_axis(image)
        prompts = reference_prompts(read_label(ref, image).array, axis, target)
        for mode, prompt in prompts.items():
            for fraction in JITTERS:
                jittered = jitter_prompt(prompt, fraction, rng, image, axis)
                forms.setdefault((mode, fraction), {})[name] = prompt_json(jittered)
    files = {}
    for (mode, fraction), content in forms.items():
        files[mode, fraction] = folder / f"{mode}_{round(fraction * 100)}.json"
        files[mode, fraction].write_text(json.dumps(content, indent=1))
    return files


def train(
    dataset: Path, run: Path, image_size: int, flags: list[str], iterations: int, device: str, batch_size: int = 8
) -> Path:
    from masam.cli import main

    args = ["train", "-d", str(dataset), "-o", str(run), "--arch", "vit_tiny", "--image-size", str(image_size)]
    args += ["--iterations", str(iterations), "--batch-size", str(batch_size), "--lr", "1e-3", "--power", "1"]
    args += ["--warmup", str(min(50, max(1, iterations // 10)))]
    args += ["--exclude-background", "--val-every", "0", "--val-fraction", "0", "--workers", "2", "--quiet"]
    if main([*args, "--device", device, *flags]) != 0:
        raise RuntimeError(f"training {run} failed")
    return run


def predict_and_score(
    run: Path, dataset: Path, boxes: Path | None, out: Path, classes, device: str, mode: str = "faithful"
) -> dict:
    """Predict ``imagesTs`` (with ``--boxes`` when given) and return Dice per class per case."""
    from masam.cli import main

    args = ["predict", "-m", str(run), "-i", str(dataset / "imagesTs"), "-o", str(out), "--quiet", "--mode", mode]
    if main([*args, "--device", device, *(["--boxes", str(boxes)] if boxes else [])]) != 0:
        raise RuntimeError(f"prediction into {out} failed")
    scores = {}
    for ref in sorted((dataset / "labelsTs").glob("*.nii.gz")):
        truth = read_label(ref).array
        pred = read_label(out / ref.name).array
        scores[ref.name[: -len(".nii.gz")]] = {str(c): dice(pred == c, truth == c) for c in classes}
    return scores


def run_task(task: str, work: Path, args: argparse.Namespace) -> dict:
    writer, target, image_size, flags, default_iterations = TASKS[task]
    image_size = args.image_size or image_size
    synthetic = {"train_cases": args.train_cases, "test_cases": args.test_cases, "contrast": args.contrast}
    sizes = synthetic if task == "synthetic" else {}
    dataset = writer(work / task / "data", **sizes)
    meta = json.loads((dataset / "dataset.json").read_text())
    classes = sorted(v for v in meta["labels"].values() if v > 0)
    boxes = write_boxes_files(dataset, target, work / task / "boxes", args.seed)
    result: dict = {"target_class": target, "image_size": image_size}
    result["iterations"] = args.iterations or default_iterations
    result.update(batch_size=args.batch_size, predict_mode=args.predict_mode, **sizes)
    device = args.device
    for model in args.models:
        model_flags = MODELS[model]
        start = time.perf_counter()
        if args.reuse_runs and (work / task / model / "model_last.safetensors").is_file():
            run = work / task / model
        else:
            run = train(
                dataset, work / task / model, image_size, flags + model_flags(target), result["iterations"], device,
                args.batch_size,
            )  # fmt: skip
            result.setdefault("train_seconds", {})[model] = round(time.perf_counter() - start, 1)
        for mode in RUNS[model]:
            for fraction in (None,) if mode == "automatic" else JITTERS:
                file = None if fraction is None else boxes[mode, fraction]
                key = mode if fraction is None else f"{mode}@{round(fraction * 100)}%"
                out = work / task / "pred" / model / key.replace("@", "_").replace("%", "")
                scores = predict_and_score(run, dataset, file, out, classes, device, args.predict_mode)
                lesion = [s[str(target)] for s in scores.values()]
                result.setdefault(model, {})[key] = {"lesion_dice_mean": float(np.mean(lesion)), "cases": scores}
    result["ratios"] = ratios(result)
    return result


def ratios(result: dict) -> dict:
    """The issue's targets: 3D box / per-slice boxes >= 0.9 and propagation / per-slice >= 0.85
    (each model, no jitter), and the dropout model's automatic / the no-prompt model's >= 0.9."""

    def mean(model, key):
        return result[model][key]["lesion_dice_mean"]

    out = {}
    prompted = [m for m in ("box", "box_3d", "dropout", "box_empty") if m in result]
    for model in prompted:
        per_slice = max(mean(model, "slice_boxes@0%"), 1e-9)
        out[f"{model}: box_3d / slice_boxes"] = mean(model, "box_3d@0%") / per_slice
        out[f"{model}: propagate / slice_boxes"] = mean(model, "propagate@0%") / per_slice
        if "box" in result:  # against the original's protocol and prompts
            baseline = max(mean("box", "slice_boxes@0%"), 1e-9)
            out[f"{model}: box_3d / box model's slice_boxes"] = mean(model, "box_3d@0%") / baseline
            out[f"{model}: propagate / box model's slice_boxes"] = mean(model, "propagate@0%") / baseline
    if "dropout" in result and "no_prompt" in result:
        automatic = max(mean("no_prompt", "automatic"), 1e-9)
        out["dropout automatic / no_prompt automatic"] = mean("dropout", "automatic") / automatic
    return out


def markdown_table(result: dict) -> str:
    """The lesion Dice of one task's result as a Markdown table: a row per model, a column per
    mode, the jitters 0/10/20% side by side."""
    lines = ["| model | automatic | per-slice boxes 0/10/20% | 3D box 0/10/20% | propagation 0/10/20% |"]
    lines.append("|---|---|---|---|---|")
    for model in (m for m in MODELS if m in result):
        cells = []
        for mode in MODES:
            keys = [mode] if mode == "automatic" else [f"{mode}@{round(j * 100)}%" for j in result["jitters"]]
            found = [result[model].get(k) for k in keys]
            cells.append(" / ".join(f"{f['lesion_dice_mean']:.3f}" for f in found) if all(found) else "-")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--iterations", type=int, default=None, help="training steps (default: per task)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompt jitter")
    parser.add_argument("--image-size", type=int, default=None, help="model input size (default: per task)")
    parser.add_argument("--batch-size", type=int, default=8, help="stacks per training step")
    parser.add_argument("--train-cases", type=int, default=16, help="synthetic task: training cases")
    parser.add_argument("--test-cases", type=int, default=6, help="synthetic task: test cases")
    parser.add_argument("--contrast", type=float, default=LESION_CONTRAST, help="synthetic task: lesion darker by (HU)")
    parser.add_argument("--predict-mode", default="faithful", choices=("faithful", "fast"), help="masam predict --mode")
    parser.add_argument("--work", default=None, help="folder for data, runs and predictions (default: temporary)")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"), help="folder of prompts_TASK.json")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="models to train")
    parser.add_argument("--reuse-runs", action="store_true", help="keep models already trained in --work")
    parser.add_argument("--table", default=None, help="print the Markdown table of a result file and stop")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(Path(args.table).read_text())))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for task in args.tasks:  # one file per task: tasks differ in cost by hours, so they run apart
            result = {"task": task, **run_task(task, work, args), "jitters": list(JITTERS), "device": args.device}
            write_result(Path(args.output) / f"prompts_{task}.json", result)


if __name__ == "__main__":
    main()
