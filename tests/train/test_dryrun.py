"""Issue 24: ``masam train --dry-run`` prints every resolved setting with its source and what the
trainer derives from them, and exits without reading or writing anything."""

from __future__ import annotations

import dataclasses

from masam.cli import main
from masam.train import TrainConfig
from masam.train.config import resolve_train_config
from masam.train.dryrun import setting_sources

# the original's values (train.py, trainer.py, dataset.py; docs/fidelity.md), as --dry-run shows them
ORIGINAL_BTCV = {
    "lr": "0.0008",  # train.py:23
    "weight_decay": "0.1",  # trainer.py:64
    "warmup": "250",  # train.py:38
    "power": "7.0",  # train.py:42 (lr_exp)
    "epochs": "400",  # train.py:25, max_iterations = max_epochs x len(trainloader)
    "stop_epoch": "300",  # train.py:26
    "batch_size": "24",  # 3 per GPU x 8 GPUs, train.py:21-22
    "precision": "mixed",  # fp16 + GradScaler + TF32 on CUDA, train.py:44-59
    "device": "auto",
    "snapshot_every": "20",  # trainer.py:122
    "augment_policy": "original",  # RandomGenerator, dataset.py:317-333
    "augment": "on",
    "reinit_head": "on",  # build_sam.py:132-145: the head is always re-initialised
    "merge_labels": "13:12",  # dataset.py:386-387
    "val_fraction": "0.0",  # every training case, trainer.py:46
    "val_every": "0",
    "dice_weight": "0.8",  # train.py:41
    "include_background": "on",  # utils.py:52-54
    "image_size": "512",
    "slices": "5",
    "rank": "32",
    "scale": "1.0",
    "fact_dropout": "0.1",  # sam_fact_tt_image_encoder.py:264-265
    "ct_window": "-200.0 250.0",  # test.py:120-124, dataset.py:373-378
    "stack_minmax": "on",  # dataset.py:378: every stack scaled by its own range
    "orientation": "original",  # the stacks as util_script_btcv.py:49-52 stores them
    "mri_rule": "percentile",  # util_script_prostateMRI.py:71-75 (issue 27: masam's own recipe differs)
}
# the original's values that are masam's defaults too
DEFAULTS = ("device", "augment", "include_background", "fact_dropout")


def _settings(out: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in out.splitlines()[1 : out.splitlines().index("what the trainer makes of them:")]:
        name, rest = line.split(None, 1)
        value, source = rest.rsplit(" [", 1)
        rows[name] = (value.strip(), source.removesuffix("]"))
    return rows


def test_dry_run_prints_the_originals_value_of_every_setting_for_the_btcv_preset(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "-d", str(tmp_path / "absent"), "-o", str(run), "--sam-checkpoint", "sam_vit_h.pth"]
    assert main([*args, "--preset", "btcv", "--seed", "7", "--dry-run"]) == 0
    out = capsys.readouterr().out
    rows = _settings(out)
    assert {k: rows[k][0] for k in ORIGINAL_BTCV} == ORIGINAL_BTCV
    assert all(rows[k][1] == "preset btcv" for k in ORIGINAL_BTCV if k not in DEFAULTS)
    assert rows["seed"] == ("7", "given") and rows["device"] == ("auto", "default")
    assert list(rows) == [f.name for f in dataclasses.fields(TrainConfig)]  # every setting
    derived = out.split("what the trainer makes of them:")[1]
    for fact in [
        "AdamW, betas (0.9, 0.999), weight decay 0.1",
        "0.0008 / 250 at step 0, linear to 0.0008 over 250 warm-up steps, then "
        "x (1 - (step - 250) / max iterations) ^ 7.0",
        "max iterations = 400 epochs x steps per epoch, stop after epoch 300",
        "0.2 x cross-entropy + 0.8 x soft Dice (background included)",
        "24 stacks of 5 slices per step over all processes",
        "fp16 autocast + GradScaler + TF32 on a CUDA GPU",
        "split: every training case, nothing held out; validation none",
        "model_epoch_N.safetensors every 20 epochs and at the last; masam predict -m RUN uses model_last",
        "augmentation: policy original",
        "decoder head: re-initialised",
        "labels merged: 13:12",
    ]:  # fmt: skip
        assert fact in derived, fact
    assert not run.exists()  # nothing written, and the absent dataset and checkpoint were not read


def test_dry_run_shows_an_option_given_over_the_preset(tmp_path, capsys):
    args = ["train", "-d", "D", "-o", str(tmp_path / "r"), "--arch", "vit_tiny", "--preset", "paper"]
    assert main([*args, "--lr", "1e-4", "--predict-with", "epoch:160", "--dry-run"]) == 0
    rows = _settings(capsys.readouterr().out)
    assert rows["lr"] == ("0.0001", "given") and rows["warmup"] == ("250", "preset paper")
    assert rows["predict_with"] == ("epoch:160", "given")


def test_each_setting_names_the_layer_it_came_from():
    given = {"dataset": "d", "output": "o", "arch": "vit_tiny", "lr": 1e-3}
    sources = setting_sources(resolve_train_config(given, "scratch"), given, "scratch")
    assert sources["lr"] == "given" and sources["arch"] == "given"
    assert sources["rank"] == "preset scratch" and sources["warmup"] == "preset scratch"
    assert sources["mri_rule"] == "default" and sources["weight_decay"] == "default"

