"""How the cost of a whole volume grows: time per volume against slice count and image size.

Run by hand: ``python benchmarks/volume_scaling.py`` (CPU, vit_b, fast mode so that it ends in a
few minutes) or, on a GPU, ``python benchmarks/volume_scaling.py --device cuda --precision bf16
--modes faithful fast --slices 50 100 200 --size-slices 50 --out benchmarks/results/volume_scaling_gpu.json``.

Weights are random (time does not depend on them). Each volume is a synthetic CT array with the
model's in-plane size, predicted through ``Predictor.predict`` (normalisation, stacks, softmax
aggregation, argmax), after one warm-up volume. A linear cost shows as a constant time per slice;
the JSON also gives the least-squares line through (slices, seconds) and its largest relative
residual.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from results_file import write_result  # the sibling module in benchmarks/

from masam.allocator import configure_allocator
from masam.data import Normalization
from masam.infer import Predictor
from masam.infer.predictor import PREDICTION_MODES
from masam.model import ModelConfig, build_model


def seconds_per_volume(predictor: Predictor, slices: int, size: int, repeats: int) -> float:
    volume = np.random.default_rng(0).integers(-1000, 1000, (slices, size, size)).astype(np.int16)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(volume)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def make_predictor(arch: str, size: int, mode: str, args) -> Predictor:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch, size, num_classes=args.classes))
    return Predictor(
        model, Normalization("CT"), device=args.device, precision=args.precision,
        batch_size=args.batch_size, stride=PREDICTION_MODES[mode],
    )  # fmt: skip


def linear_fit(points: list[tuple[int, float]]) -> dict:
    x, y = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    slope, intercept = np.polyfit(x, y, 1)
    residual = np.abs(slope * x + intercept - y) / y
    return {"seconds_per_slice": round(slope, 4), "intercept_s": round(intercept, 3),
            "max_relative_residual": round(float(residual.max()), 4)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="vit_b", help="encoder size (default vit_b)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="(default fp32)")
    parser.add_argument("--modes", nargs="+", default=["fast"], choices=list(PREDICTION_MODES), help="(default fast)")
    parser.add_argument("--slices", type=int, nargs="+", default=[10, 20, 40], help="slice counts (default 10 20 40)")
    parser.add_argument("--slice-size", type=int, default=256, help="image size of the slice-count series")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[256, 512, 1024], help="image sizes (default 256 512 1024)"
    )
    parser.add_argument("--size-slices", type=int, default=5, help="slices of the image-size series (default 5)")
    parser.add_argument("--batch-size", type=int, default=2, help="stacks per forward pass (default 2)")
    parser.add_argument("--classes", type=int, default=8, help="foreground classes (default 8)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per point, fastest kept (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU (default 2)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "volume_scaling.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configure_allocator("reuse")  # as masam predict
    result = {"arch": args.arch, "device": args.device, "precision": args.precision, "batch_size": args.batch_size}
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
    for mode in args.modes:
        predictor = make_predictor(args.arch, args.slice_size, mode, args)
        seconds_per_volume(predictor, 5, args.slice_size, 1)  # warm-up
        points = [(n, seconds_per_volume(predictor, n, args.slice_size, args.repeats)) for n in args.slices]
        by_size = []
        for size in args.sizes:
            sized = make_predictor(args.arch, size, mode, args)
            seconds_per_volume(sized, 5, size, 1)
            by_size.append((size, seconds_per_volume(sized, args.size_slices, size, args.repeats)))
            del sized
        result[mode] = {
            "by_slices": {"image_size": args.slice_size,
                          "points": [{"slices": n, "seconds": round(s, 3), "seconds_per_slice": round(s / n, 4)}
                                     for n, s in points],
                          "fit": linear_fit(points)},
            "by_image_size": {"slices": args.size_slices,
                              "points": [{"image_size": z, "seconds": round(s, 3),
                                          "relative_to_first": round(s / by_size[0][1], 2)} for z, s in by_size]},
        }  # fmt: skip
        print(mode, result[mode], flush=True)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
