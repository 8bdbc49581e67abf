"""Interactive segmentation (issue 22): Dice against clicks with a simulated user, and the speed of
a session (``masam.interactive.Session``).

**Quality** (``--part quality``): on the tasks of ``benchmarks/prompts.py`` it trains vit_tiny
models the project's way and runs the standard simulated user on each test case through a session:
each next click at the point of the largest 3D error region farthest from its border (an include
click where the lesion was missed, an exclude click where the prediction is wrong;
``masam.train.clicks.largest_error_point``), for three protocols:

- ``clicks``: clicks only, from an empty map;
- ``box_clicks``: the reference's 3D bounding box, then clicks;
- ``automatic_clicks``: the model's automatic prediction, then clicks (each slice's first click
  corrects it through the mask prompt).

It writes the lesion Dice after 0, 1, 3, 5 and 10 clicks and NoC@80 / NoC@85 (clicks needed to
reach that Dice, 20 when never), per case and as means, and the baseline: the original protocol's
per-slice-box model given a box on every slice. Models: ``box`` (the baseline, ``--prompt box``),
``dropout`` (``box`` with ``--box-3d 0.5 --prompt-dropout 0.5``: the automatic figure without
clicks), ``points`` (``--prompt points``), ``box_points`` (``--prompt box+points
--prompt-dropout 0.5``: one model for all three protocols).

**Speed** (``--part speed``): a model with random weights (time does not depend on them), a
synthetic CT volume; the time from ``set_image`` to the first possible interaction (the stacks
holding the focus slice encoded), the whole volume's encoding, and the latency of 20 clicks on the
focus slice (median), with the image encoder's calls counted (a click must run none).

Run by hand: ``python benchmarks/interactive.py --part speed`` (vit_b, 512², 100 slices, CPU) and
``python benchmarks/interactive.py --part quality --tasks synthetic`` (hours on a 2-core CPU).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from prompts import TASKS, reference_prompts, train  # the sibling benchmark: tasks, training, prompts
from results_file import write_result  # the sibling module in benchmarks/

from masam.data import Normalization, read_label, read_volume, slice_axis
from masam.eval import dice
from masam.infer import Predictor
from masam.infer.predictor import PREDICTION_MODES
from masam.interactive import Session
from masam.model import ModelConfig, build_model
from masam.train.clicks import largest_error_point

PROTOCOLS = ("clicks", "box_clicks", "automatic_clicks")
REPORTED = (0, 1, 3, 5, 10)
MAX_CLICKS = 20  # NoC's cap
THRESHOLDS = (0.80, 0.85)
MODELS = {
    "box": lambda label: ["--prompt", "box", "--box-label", str(label)],
    "dropout": lambda label: [*MODELS["box"](label), "--box-3d", "0.5", "--prompt-dropout", "0.5"],
    "points": lambda label: ["--prompt", "points", "--box-label", str(label)],
    "box_points": lambda label: ["--prompt", "box+points", "--box-label", str(label), "--prompt-dropout", "0.5"],
}
RUNS = {  # the protocols each model is asked for
    "box": ("slice_boxes",),
    "dropout": ("automatic",),
    "points": ("clicks",),
    "box_points": ("automatic", *PROTOCOLS),
}


# ---------------------------------------------------------------- the simulated user


def simulate(session: Session, reference: np.ndarray, label: int, protocol: str, clicks: int) -> list[float]:
    """The lesion Dice after 0, 1, ..., ``clicks`` clicks of the simulated user on one case; the
    session holds the image. ``reference`` ``[z, y, x]`` is the case's label map."""
    target = reference == label
    if protocol == "box_clicks":
        zyx = np.argwhere(target)
        low, high = zyx.min(0)[::-1], zyx.max(0)[::-1]
        session.add_box([*map(float, low), *map(float, high)])
    scores = [dice(session.result() == label, target)]
    for _ in range(clicks):
        found = largest_error_point(session.result() == label, target)
        if found is None:  # perfect: every further click leaves it so
            scores.append(scores[-1])
            continue
        (z, y, x), include = found
        session.add_points([[x, y, z, include]])
        scores.append(dice(session.result() == label, target))
    return scores


def clicks_to_reach(scores: list[float], threshold: float) -> int:
    """NoC: the first click count whose Dice reaches ``threshold`` (:data:`MAX_CLICKS` when none)."""
    return next((k for k, s in enumerate(scores) if s >= threshold), MAX_CLICKS)


def case_session(predictor: Predictor, protocol: str) -> Session:
    if protocol == "automatic_clicks":
        return Session(predictor, base="automatic", start="automatic")
    return Session(predictor, base="empty")


def score_protocols(run: Path, dataset: Path, label: int, protocols, device: str) -> dict:
    """Per protocol: the Dice curve of every test case, the means at :data:`REPORTED` clicks and NoC."""
    predictor = Predictor.from_files(run, device=device)
    out: dict = {}
    for protocol in protocols:
        curves = {}
        for ref in sorted((dataset / "labelsTs").glob("*.nii.gz")):
            name = ref.name[: -len(".nii.gz")]
            volume = read_volume(dataset / "imagesTs" / f"{name}_0000.nii.gz")
            session = case_session(predictor, protocol)
            session.set_image(volume, background=False)
            curves[name] = simulate(session, read_label(ref, volume).array, label, protocol, MAX_CLICKS)
        means = [float(np.mean([c[k] for c in curves.values()])) for k in range(MAX_CLICKS + 1)]
        noc = {f"noc@{round(t * 100)}": float(np.mean([clicks_to_reach(c, t) for c in curves.values()]))
               for t in THRESHOLDS}  # fmt: skip
        after = {str(k): means[k] for k in REPORTED}
        out[protocol] = {"dice_after": after, **noc, "mean_curve": means, "cases": curves}
    return out


def score_without_clicks(run: Path, dataset: Path, label: int, mode: str, device: str) -> float:
    """Mean lesion Dice of the ``automatic`` prediction or with a box on every ``slice_boxes``."""
    predictor = Predictor.from_files(run, device=device)
    scores = []
    for ref in sorted((dataset / "labelsTs").glob("*.nii.gz")):
        volume = read_volume(dataset / "imagesTs" / f"{ref.name[: -len('.nii.gz')]}_0000.nii.gz")
        truth = read_label(ref, volume).array
        boxes = reference_prompts(truth, slice_axis(volume), label)["slice_boxes"] if mode == "slice_boxes" else None
        scores.append(dice(predictor.predict(volume, boxes=boxes).labels == label, truth == label))
    return float(np.mean(scores))


def quality(task: str, work: Path, args) -> dict:
    writer, label, image_size, flags, default_iterations = TASKS[task]
    image_size = args.image_size or image_size
    sizes = {"train_cases": args.train_cases, "test_cases": args.test_cases} if task == "synthetic" else {}
    dataset = writer(work / task / "data", **sizes)
    iterations = args.iterations or default_iterations
    result: dict = {"task": task, "target_class": label, "image_size": image_size, "iterations": iterations, **sizes}
    for model in args.models:
        run = work / task / model
        if not (args.reuse_runs and (run / "model_last.safetensors").is_file()):
            start = time.perf_counter()
            train(dataset, run, image_size, flags + MODELS[model](label), iterations, args.device, args.batch_size)
            result.setdefault("train_seconds", {})[model] = round(time.perf_counter() - start, 1)
        protocols = [p for p in RUNS[model] if p in PROTOCOLS]
        entry = score_protocols(run, dataset, label, protocols, args.device) if protocols else {}
        for mode in (m for m in RUNS[model] if m not in PROTOCOLS):
            entry[mode] = {"dice": score_without_clicks(run, dataset, label, mode, args.device)}
        result[model] = entry
    return result


# ---------------------------------------------------------------- speed


def speed(args) -> dict:
    """Seconds to the first interaction, for the whole volume's encoding, and per click."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(args.arch, args.size, num_classes=1))
    model.metadata = {"prompt": "box+points", "box_label": 1, "prompt_dropout": 0.5, "click_rounds": 3}
    predictor = Predictor(
        model, Normalization("CT"), device=args.device, precision=args.precision, stride=PREDICTION_MODES[args.mode]
    )
    volume = np.random.default_rng(0).integers(-1000, 1000, (args.slices, args.size, args.size)).astype(np.int16)
    session = Session(predictor, base="empty")
    encoded = []
    session.on_progress = lambda done, total: encoded.append((done, time.perf_counter()))
    start = time.perf_counter()
    session.set_image(volume, focus=args.slices // 2)
    first = time.perf_counter() - start
    focus_stacks = len({c for c, _ in session._coverage[args.slices // 2]})
    if args.whole_volume:
        session.wait()
    else:  # the clicks are timed on a quiet session: the background's stacks would share the CPU
        session.cancel()
    whole = time.perf_counter() - start
    calls = []
    forward = model.image_encoder.forward
    model.image_encoder.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    rng = np.random.default_rng(1)
    latencies = []
    for i in range(args.clicks):
        x, y = rng.integers(args.size // 4, 3 * args.size // 4, 2)
        tick = time.perf_counter()
        session.add_points([[float(x), float(y), args.slices // 2, int(i % 3 != 2)]])
        latencies.append(time.perf_counter() - tick)
    per_stack = first / max(focus_stacks, 1)
    return {
        "arch": args.arch, "image_size": args.size, "slices": args.slices, "precision": predictor.precision,
        "mode": args.mode, "threads": torch.get_num_threads(), "stacks": len(session.centres),
        "focus_stacks": focus_stacks, "first_interaction_s": round(first, 2),
        "whole_volume_encoding_s": round(whole, 1) if args.whole_volume else None,
        "whole_volume_encoding_estimate_s": round(per_stack * len(session.centres), 1),
        "click_latency_median_s": round(statistics.median(latencies), 3),
        "click_latency_s": [round(t, 3) for t in latencies],
        "encoder_calls_during_clicks": len(calls), "note": args.note,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("speed", "quality"), default="speed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=str(Path(__file__).parent / "results"))
    speed_args = parser.add_argument_group("speed")
    speed_args.add_argument("--arch", default="vit_b")
    speed_args.add_argument("--size", type=int, default=512)
    speed_args.add_argument("--slices", type=int, default=100)
    speed_args.add_argument("--precision", default="auto", help="auto: the device's fastest (bf16 on a CPU with it)")
    speed_args.add_argument("--mode", default="fast", choices=tuple(PREDICTION_MODES))
    speed_args.add_argument("--clicks", type=int, default=20)
    speed_args.add_argument("--whole-volume", action="store_true", help="encode the whole volume (else estimated)")
    speed_args.add_argument("--note", default="", help="what else ran on the machine")
    quality_args = parser.add_argument_group("quality")
    quality_args.add_argument("--tasks", nargs="+", default=["synthetic"], choices=list(TASKS))
    quality_args.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    quality_args.add_argument("--iterations", type=int, default=None)
    quality_args.add_argument("--image-size", type=int, default=None)
    quality_args.add_argument("--batch-size", type=int, default=8)
    quality_args.add_argument("--train-cases", type=int, default=16)
    quality_args.add_argument("--test-cases", type=int, default=6)
    quality_args.add_argument("--work", default=None, help="folder for data and runs (default: temporary)")
    quality_args.add_argument("--reuse-runs", action="store_true")
    args = parser.parse_args(argv)
    if args.part == "speed":
        result = speed(args)
        name = f"interactive_speed_{args.arch}_{args.mode}_{result['precision']}.json"
        write_result(Path(args.output) / name, {**result, "device": args.device})
        return
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            result = quality(task, Path(args.work or tmp), args)
            write_result(Path(args.output) / f"interactive_{task}.json", {**result, "device": args.device})


if __name__ == "__main__":
    main()

