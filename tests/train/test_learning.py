"""vit_tiny learns a task that needs the third dimension, and the 3D adapters are what does it."""

from __future__ import annotations

import json

import pytest

from masam.cli import main
from tests.train.depth_data import make_depth_dataset

# The recipe for a small model from random initialisation on the CPU (the paper's values are for
# fine-tuning SAM): a higher peak lr with linear decay, and foreground-only Dice so that the
# all-background start is not a resting point.
RECIPE = [
    "--arch", "vit_tiny", "--image-size", "64", "--rank", "8", "--iterations", "600", "--batch-size", "4",
    "--lr", "1e-3", "--power", "1", "--warmup", "20", "--no-augment", "--exclude-background",
    "--val-fraction", "0.2", "--val-every", "100", "--seed", "1", "--workers", "1", "--quiet",
]  # fmt: skip


def held_out_dice(run) -> dict:
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return [r for r in records if "val_dice" in r][-1]


@pytest.mark.slow
def test_3d_adapters_learn_what_2d_adapters_cannot(tmp_path):
    data = make_depth_dataset(tmp_path / "Depth", cases=24)
    assert main(["train", "-d", str(data), "-o", str(tmp_path / "3d"), *RECIPE]) == 0
    assert main(["train", "-d", str(data), "-o", str(tmp_path / "2d"), *RECIPE, "--adapter-kernel", "1"]) == 0
    with_3d, only_2d = held_out_dice(tmp_path / "3d"), held_out_dice(tmp_path / "2d")
    print(
        f"\nheld-out mean foreground Dice: 3D adapters {with_3d['val_dice']:.3f}, 2D adapters {only_2d['val_dice']:.3f}"
    )
    print(f"per class 3D: {with_3d}\nper class 2D: {only_2d}")
    assert with_3d["val_dice"] >= 0.8
    assert only_2d["val_dice"] < with_3d["val_dice"] - 0.1
