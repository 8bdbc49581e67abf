"""Issue 16 figures: a 2-fold vit_tiny cross-validation on the demo's phantom, each fold and their
ensemble on the held-out cases, test-time mirroring's cost and gain, and the post-processing gain.

    PYTHONPATH=src python benchmarks/crossval_workflow.py --iterations 150 --out /tmp/cv

Writes benchmarks/results/crossval_workflow.json (or --result)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from masam.cli import main
from masam.demo import write_phantom_dataset
from masam.infer.postprocess import postprocess_runs


def _dice(root: Path, dataset: Path, name: str) -> float:
    metrics = root / f"{name}.json"
    assert main(["evaluate", "-p", str(root / name), "-r", str(dataset / "labelsTs"), "-o", str(metrics)]) == 0
    return json.loads(metrics.read_text())["mean"]["dice"]


def _predict(root: Path, dataset: Path, name: str, models: list[Path], *extra: str) -> float:
    started = time.perf_counter()
    argv = ["predict", "-m", *map(str, models), "-i", str(dataset / "imagesTs"), "-o", str(root / name), "--quiet"]
    assert main([*argv, "--batch-size", "16", "--no-postprocessing", *extra]) == 0
    return time.perf_counter() - started


def run(out: Path, iterations: int, train_cases: int, test_cases: int) -> dict:
    dataset = write_phantom_dataset(out / "dataset", train_cases, test_cases)
    runs = out / "runs"
    train_folds(dataset, runs, iterations)
    result: dict = {"iterations_per_fold": iterations, "train_cases": train_cases, "test_cases": test_cases}
    return {**result, **measure(out, dataset, runs)}


def train_folds(dataset: Path, runs: Path, iterations: int) -> None:
    train = ["--arch", "vit_tiny", "--image-size", "64", "--rank", "8", "--iterations", str(iterations),
             "--batch-size", "4", "--lr", "1e-3", "--warmup", "20", "--power", "1", "--exclude-background",
             "--val-every", "0", "--no-augment", "--workers", "0", "--quiet", "--num-folds", "2"]  # fmt: skip
    for fold in ("0", "1"):
        assert main(["train", "-d", str(dataset), "-o", str(runs / f"fold_{fold}"), "--fold", fold, *train]) == 0


def measure(out: Path, dataset: Path, runs: Path) -> dict:
    """Each fold, their ensemble, each with and without --tta, on imagesTs; the post-processing gain."""
    result: dict = {}
    seconds = {}
    for fold in ("0", "1"):
        seconds[f"fold_{fold}"] = _predict(out, dataset, f"fold_{fold}", [runs / f"fold_{fold}"])
        seconds[f"fold_{fold}_tta"] = _predict(out, dataset, f"fold_{fold}_tta", [runs / f"fold_{fold}"], "--tta")
    seconds["ensemble"] = _predict(out, dataset, "ensemble", [runs])
    seconds["ensemble_tta"] = _predict(out, dataset, "ensemble_tta", [runs], "--tta")
    result["test_dice"] = {k: _dice(out, dataset, k) for k in seconds}
    result["predict_seconds"] = seconds
    result["postprocessing"] = postprocess_runs([runs / "fold_0", runs / "fold_1"])
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/masam_crossval")
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--train-cases", type=int, default=6)
    parser.add_argument("--test-cases", type=int, default=3)
    parser.add_argument("--runs", help="existing fold runs (fold_0, fold_1): measure only; needs --dataset")
    parser.add_argument("--dataset", help="the phantom dataset the --runs were trained on")
    parser.add_argument("--result", default=str(Path(__file__).parent / "results" / "crossval_workflow.json"))
    args = parser.parse_args()
    if args.runs:
        figures = measure(Path(args.out), Path(args.dataset), Path(args.runs))
    else:
        figures = run(Path(args.out), args.iterations, args.train_cases, args.test_cases)
    Path(args.result).write_text(json.dumps(figures, indent=1, default=str))
    print(json.dumps(figures, indent=1, default=str))
