"""progress.png from log.jsonl records: written, readable, the right panels drawn, robust to gaps."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from masam.train.progress import _class_label, plot_progress, read_log

GREEN = np.array([44, 160, 44])  # matplotlib's tab:green, the learning-rate line
BLACK = np.array([0, 0, 0])


def trainer_like_records(steps=60, per_epoch=20, classes=("1", "2")):
    """Records shaped as the trainer writes them: one per step, one per validation."""
    records = []
    for step in range(1, steps + 1):
        epoch = (step - 1) // per_epoch
        ce, dice = 1.5 * np.exp(-step / 20) + 0.05, 0.9 * np.exp(-step / 30) + 0.1
        records.append({"step": step, "epoch": epoch, "lr": 1e-3 * (1 - step / steps), "loss": 0.2 * ce + 0.8 * dice,
                        "ce": ce, "dice": dice, "time_s": 0.1 * step})  # fmt: skip
        if step % per_epoch == 0:
            val = {f"val_dice_{c}": min(1.0, 0.3 * (i + 1) + step / 100) for i, c in enumerate(classes)}
            records.append({"step": step, "epoch": epoch + 1, "val_dice": float(np.mean(list(val.values()))), **val})
    return records


def pixels_near(path, colour, tol=30):
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(rgb - colour).max(-1) <= tol).sum())


def test_full_log_gives_all_panels(tmp_path):
    path = plot_progress(trainer_like_records(), tmp_path / "progress.png", class_names={1: "liver", 2: "kidney"})
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (800, 900)
    assert pixels_near(path, GREEN) > 200  # the learning rate is drawn
    assert [p.name for p in tmp_path.iterdir()] == ["progress.png"]


def test_missing_keys_are_tolerated(tmp_path):
    no_lr = [{k: v for k, v in r.items() if k != "lr"} for r in trainer_like_records()]
    path = plot_progress(no_lr, tmp_path / "no_lr.png")
    assert pixels_near(path, GREEN) < 20  # no learning-rate line
    only_val = [r for r in trainer_like_records() if "val_dice" in r]
    assert Image.open(plot_progress(only_val, tmp_path / "val.png")).size == (800, 900)
    assert Image.open(plot_progress([], tmp_path / "empty.png")).size == (800, 900)
    odd = [{"step": "x", "loss": None}, {"loss": float("nan")}, {"epoch": 1, "loss": 0.5}, "not a record"]
    assert Image.open(plot_progress(odd, tmp_path / "odd.png")).size == (800, 900)


def test_read_log_skips_a_cut_last_line(tmp_path):
    records = trainer_like_records(steps=5, per_epoch=5)
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 6, "lo')
    assert read_log(log) == json.loads(json.dumps(records))


@pytest.mark.parametrize(
    "key, names, shown",
    [("val_dice_1", {1: "liver"}, "liver"), ("val_dice_2", {1: "liver"}, "2"), ("val_dice_spleen", None, "spleen")],
)
def test_class_labels(key, names, shown):
    assert _class_label(key, names) == shown
