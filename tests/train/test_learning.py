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


# Issue 27: training that stopped learning on real data while every phantom check stayed green.
# Three shared BraTS cases train a vit_tiny from scratch with the default recipe (no augmentation
# flag: whatever `masam train` does by default), the fourth is predicted and scored. The size and
# schedule are the smallest at which the benchmark separates a learning recipe from a broken one
# (docs/learning.md).
LEARNING_HELD_OUT = "brats_2013_pat0001_1"
LEARNING_RECIPE = [
    "--arch", "vit_tiny", "--image-size", "96", "--iterations", "300", "--batch-size", "8", "--lr", "1e-3",
    "--power", "1", "--warmup", "50", "--exclude-background", "--val-every", "0", "--val-fraction", "0",
    "--workers", "1", "--quiet",
]  # fmt: skip
# Calibration at this setting (docs/learning.md): the default (masam's policy, robust MRI rule)
# 0.57; with the original's percentile rule 0.37; no augmentation 0.10 (it learns the three
# training volumes, 0.84, and not the tumour); the original's policy 0.01
LEARNING_MIN_DICE = 0.40


@pytest.fixture
def lesion_data():
    from tests.conftest import benchmark_modules

    with benchmark_modules("lesion_data") as (module,):
        yield module


@pytest.mark.slow
def test_default_training_learns_real_tumours(tmp_path, lesion_data):
    from masam.data import read_label
    from masam.eval import dice
    from tests.conftest import SHARED, require_shared

    cases = require_shared(SHARED / "data" / "deepmedic_brats2015")
    data = lesion_data.write_brats_tumour_dataset(tmp_path / "brats", LEARNING_HELD_OUT, folder=cases)
    assert main(["train", "-d", str(data), "-o", str(tmp_path / "run"), *LEARNING_RECIPE]) == 0
    args = ["-m", str(tmp_path / "run"), "-i", str(data / "imagesTs"), "-o", str(tmp_path / "pred"), "--quiet"]
    assert main(["predict", *args, "--mode", "fast"]) == 0
    truth = read_label(data / "labelsTs" / f"{LEARNING_HELD_OUT}.nii.gz").array
    predicted = read_label(tmp_path / "pred" / f"{LEARNING_HELD_OUT}.nii.gz").array
    score = dice(predicted == 1, truth == 1)
    print(f"\nheld-out whole-tumour Dice of {LEARNING_HELD_OUT}: {score:.3f}")
    assert score >= LEARNING_MIN_DICE
