"""Learning on real data (issue 27): held-out Dice and HD95 of training recipes, by leave-one-case-out.

Tasks (``benchmarks/lesion_data.py``):

- ``brats_flair``: the four ../shared BraTS 2013 cases, FLAIR, whole tumour (``OTMultiClass > 0``),
  whole 240x240x155 volumes;
- ``brats_2ch``: the same with FLAIR and T1c as two channels.

Each fold trains on three cases from scratch (vit_tiny) with the issue's command::

    masam train -d DS -o RUN --arch vit_tiny --image-size 128 --iterations 800 --batch-size 8 --lr 1e-3 \\
        --power 1 --warmup 50 --exclude-background --val-every 0 --val-fraction 0  [recipe flags]

and predicts the fourth (``masam predict --mode fast``; ``masam evaluate``). Recipes: ``default``
(no recipe flag: what ``masam train`` does today), ``no_augment``, ``original`` (the original
MA-SAM's augmentation), ``masam`` (masam's own policy), ``percentile`` (the original's MRI
normalisation, the default before the robust rule) and ``scratch`` (``--preset scratch`` with
only ``--arch``, ``--iterations`` and the validation flags given). Each run's figures are kept in
``WORK/TASK/RECIPE/fold_K/result.json``, so an interrupted benchmark continues where it stopped
(``--reuse``). Writes ``benchmarks/results/learning.json``; ``--table FILE`` prints its Markdown table.

    python benchmarks/learning.py --work /tmp/learning --tasks brats_flair --recipes default no_augment
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from lesion_data import BRATS_CASES, write_brats_tumour_dataset
from results_file import write_result

BASE = [
    "--arch", "vit_tiny", "--batch-size", "8", "--lr", "1e-3", "--power", "1", "--warmup", "50",
    "--exclude-background", "--val-every", "0", "--val-fraction", "0",
]  # fmt: skip
RECIPES = {
    "default": [],
    "no_augment": ["--no-augment"],
    "original": ["--augment-policy", "original"],
    "masam": ["--augment-policy", "masam"],
    "percentile": ["--mri-rule", "percentile"],  # the default before the robust MRI rule
    "scratch": None,  # --preset scratch, its own values
}
TASKS = {"brats_flair": ("Flair",), "brats_2ch": ("Flair", "T1c")}


def train_flags(recipe: str, image_size: int, iterations: int) -> list[str]:
    if RECIPES[recipe] is None:
        return ["--preset", recipe, "--arch", "vit_tiny", "--iterations", str(iterations), "--val-every", "0",
                "--val-fraction", "0"]  # fmt: skip
    return [*BASE, "--image-size", str(image_size), "--iterations", str(iterations), *RECIPES[recipe]]


def run_fold(task: str, recipe: str, test_case: str, work: Path, args: argparse.Namespace) -> dict:
    """Train on the other cases, predict ``test_case``, score it; kept in ``result.json``."""
    from masam.cli import main

    folder = work / task / recipe / f"test_{test_case}"
    done = folder / "result.json"
    if args.reuse and done.is_file():
        return json.loads(done.read_text())
    data = write_brats_tumour_dataset(work / task / "data" / test_case, test_case, TASKS[task])
    run, pred = folder / "run", folder / "pred"
    flags = train_flags(recipe, args.image_size, args.iterations)
    start = time.perf_counter()
    if main(["train", "-d", str(data), "-o", str(run), *flags, "--workers", str(args.workers), "--quiet"]) != 0:
        raise RuntimeError(f"training {run} failed")
    trained = time.perf_counter()
    if main(["predict", "-m", str(run), "-i", str(data / "imagesTs"), "-o", str(pred), "--mode", "fast",
             "--quiet"]) != 0:  # fmt: skip
        raise RuntimeError(f"prediction into {pred} failed")
    predicted = time.perf_counter()
    main(["evaluate", "-p", str(pred), "-r", str(data / "labelsTs"), "-o", str(folder / "metrics.json")])
    metrics = json.loads((folder / "metrics.json").read_text())["mean"]
    result = {
        "test_case": test_case, "dice": metrics["dice"], "hd95_mm": metrics["hd95"],
        "train_seconds": round(trained - start, 1), "predict_seconds": round(predicted - trained, 1),
        "flags": flags, "load_average_1min": os.getloadavg()[0],
    }  # fmt: skip
    done.write_text(json.dumps(result, indent=1))
    return result


def summary(folds: list[dict]) -> dict:
    return {
        "dice_mean": float(np.mean([f["dice"] for f in folds])),
        "dice_per_fold": [round(f["dice"], 4) for f in folds],
        "hd95_mean_mm": float(np.mean([f["hd95_mm"] for f in folds])),
        "train_seconds_mean": float(np.mean([f["train_seconds"] for f in folds])),
        "folds": folds,
    }


def markdown_table(result: dict) -> str:
    lines = ["| task | recipe | held-out Dice (mean) | per fold | HD95 (mm) | train s / fold |"]
    lines.append("|---|---|---|---|---|---|")
    for task, recipes in result["tasks"].items():
        for recipe, s in recipes.items():
            folds = ", ".join(f"{d:.2f}" for d in s["dice_per_fold"])
            lines.append(
                f"| {task} | {recipe} | {s['dice_mean']:.3f} | {folds} | {s['hd95_mean_mm']:.1f} | "
                f"{s['train_seconds_mean']:.0f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="runs and datasets (default: a temporary folder)")
    parser.add_argument("--tasks", nargs="+", default=["brats_flair"], choices=tuple(TASKS))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=tuple(RECIPES))
    parser.add_argument("--test-cases", nargs="+", default=list(BRATS_CASES), help="the folds: held-out cases")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="keep the figures of folds already run in --work")
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "learning.json")
    parser.add_argument("--table", type=Path, default=None, help="print the Markdown table of this result file")
    args = parser.parse_args(argv)
    if args.table:
        print(markdown_table(json.loads(args.table.read_text())))
        return
    work = args.work or Path(os.environ.get("TMPDIR", "/tmp")) / "masam_learning"
    result: dict = {"command": "python benchmarks/learning.py " + " ".join(argv or []), "cpu": platform.processor(),
                    "image_size": args.image_size, "iterations": args.iterations, "tasks": {}}  # fmt: skip
    for task in args.tasks:
        for recipe in args.recipes:
            folds = [run_fold(task, recipe, case, work, args) for case in args.test_cases]
            result["tasks"].setdefault(task, {})[recipe] = summary(folds)
            write_result(args.json, result)
    print(markdown_table(result))


if __name__ == "__main__":
    main()
