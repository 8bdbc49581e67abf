"""A whole CT on the CPU: a 100-slice volume, vit_b at 512², masam's fast mode against the original.

Run by hand: ``python benchmarks/ct_volume.py``. Writes ``benchmarks/results/ct_volume.json``.
Weights are random (time does not depend on them; Dice of fast mode and of bf16 on trained models:
volume_modes.json and cpu_bf16.json).

masam: ``Predictor(stride=5)`` (``--mode fast``: 20 stacks for 100 slices) at ``--precision``
(default auto: bf16 on a CPU with native bf16), the whole ``predict`` call timed (normalisation,
resizing, encoder, decoder, aggregation, argmax). The original encodes every slice as the centre of
its own stack, in float32: 100 forward passes of one stack. Running those would take most of an
hour here, so ``--reference-stacks`` float32 passes of the whole model (one 5-slice stack each) are
timed in the same run, before and after masam's volume, and the median is multiplied by 100.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from results_file import write_result  # the sibling module in benchmarks/

from masam.allocator import configure_allocator
from masam.data import Normalization
from masam.infer import Predictor
from masam.infer.predictor import MODES, stack_centres
from masam.model import ModelConfig, build_model


def synthetic_ct(slices: int, size: int = 512, seed: int = 0) -> np.ndarray:
    """``[slices, size, size]`` int16 HU: body, two organs and noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.ogrid[:slices, :size, :size]
    body = ((y - size / 2) / (size * 0.4)) ** 2 + ((x - size / 2) / (size * 0.45)) ** 2 < 1
    organ = ((z - slices / 2) / (slices / 3)) ** 2 + ((y - size * 0.45) / (size / 6)) ** 2 + ((x - size * 0.35) / (size / 7)) ** 2 < 1  # noqa: E501
    image = np.where(organ, 60, np.where(body, 0, -1000)) + rng.normal(0, 15, (slices, size, size))
    return image.astype(np.int16)


def reference_stack_seconds(model: torch.nn.Module, size: int) -> float:
    """One float32 forward pass of the whole model over one 5-slice stack (the original's unit)."""
    x = torch.rand(1, 5, 3, size, size)
    start = time.perf_counter()
    with torch.no_grad():
        model(x)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="vit_b")
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--precision", default="auto", help="masam's precision (default auto)")
    parser.add_argument("--batch-size", type=int, default=2, help="stacks per forward pass (default 2, as predict)")
    parser.add_argument("--reference-stacks", type=int, default=2, help="float32 stacks timed before and after")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ct_volume.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    configure_allocator("reuse")  # as masam predict
    torch.manual_seed(0)
    model = build_model(ModelConfig(args.arch, args.image_size, num_classes=4)).eval()
    model.metadata = {"normalization": Normalization("CT").to_dict()}
    volume = synthetic_ct(args.slices, args.image_size)
    predictor = Predictor(model, precision=args.precision, stride=MODES["fast"], batch_size=args.batch_size)
    predictor.predict(volume[:5])  # warm-up: one stack
    reference_stack_seconds(model, args.image_size)
    before = [reference_stack_seconds(model, args.image_size) for _ in range(args.reference_stacks)]
    start = time.perf_counter()
    labels = predictor.predict(volume, spacing=(0.8, 0.8, 2.5)).labels
    masam_seconds = time.perf_counter() - start
    after = [reference_stack_seconds(model, args.image_size) for _ in range(args.reference_stacks)]
    per_stack = statistics.median(before + after)
    original_seconds = args.slices * per_stack
    result = {
        "arch": args.arch,
        "image_size": args.image_size,
        "slices": args.slices,
        "threads": args.threads,
        "masam": {
            "mode": "fast",
            "precision": predictor.precision,
            "stacks": len(stack_centres(args.slices, MODES["fast"])),
            "seconds": round(masam_seconds, 1),
            "labels_shape": list(labels.shape),
        },
        "original_extrapolated": {
            "stacks": args.slices,
            "precision": "fp32",
            "seconds_per_stack_measured": [round(s, 2) for s in before + after],
            "seconds": round(original_seconds, 1),
            "note": f"median of {len(before + after)} float32 stacks timed in this run, times {args.slices}",
        },
        "time_ratio": round(masam_seconds / original_seconds, 4),
        "goal_time_ratio": 0.125,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
