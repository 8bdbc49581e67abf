"""Training settings: every field a flag in its group, the help's defaults, presets under given options."""

from __future__ import annotations

import dataclasses
import re

import pytest

from masam.options import option_name
from masam.train.config import GROUPS, PRESETS, TrainConfig, TrainSession, resolve_train_config
from tests.test_options import _help, _sub


def test_every_train_setting_has_a_flag_in_one_of_the_groups():
    sub = _sub("train")
    dests = {a.dest: a for a in sub._actions}
    for f in [*dataclasses.fields(TrainConfig), *dataclasses.fields(TrainSession)]:
        assert f.name in dests, f"no flag for TrainConfig.{f.name}"
        assert option_name(f) in dests[f.name].option_strings
    titles = {g.title for g in sub._action_groups}
    assert set(GROUPS) <= titles
    assert {f.metadata["group"] for f in dataclasses.fields(TrainConfig)} == set(GROUPS)


def test_train_help_shows_the_real_defaults(capsys):
    text = _help(capsys, "train")
    body = text[text.index("options:") :]  # past the usage line
    for name in ("lr", "warmup", "power", "weight_decay", "dice_weight", "box_jitter", "batch_size", "seed", "epochs"):
        default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
        flag = "--" + name.replace("_", "-")
        section = body[body.index(flag + " ") :]
        assert re.search(rf"\(default: {re.escape(str(default))}\)", section[:400]), (flag, section[:200])
    assert "--ct-window LOW HIGH" in text and "(default: -200.0 250.0)" in text
    assert "--no-augment" in text and "--exclude-background" in text
    assert "(default: the SAM checkpoint's)" in text  # --arch: what None means


@pytest.mark.parametrize("preset", ["scratch", "paper", "btcv"])
def test_train_help_with_a_preset_shows_the_presets_values(capsys, preset):
    """Issue 28: ``masam train --preset NAME --help`` shows the values that run would use."""
    text = _help(capsys, "train", "--preset", preset)
    body = text[text.index("options:") :]
    values = PRESETS[preset]
    for name in ("lr", "batch_size", "image_size", "warmup", "power"):
        flag = "--" + name.replace("_", "-")
        section = body[body.index(flag + " ") :][:400]
        if name in values:
            assert f"(default: {values[name]}, preset {preset})" in section, (flag, section[:200])
        else:
            default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == name)
            assert f"(default: {default})" in section, (flag, section[:200])
    assert text.endswith(f"defaults shown: those of --preset {preset}")
    assert _help(capsys, "train").endswith("masam train --preset NAME --help shows a preset's")


def test_preset_then_given_options_and_iterations_without_epochs():
    config = resolve_train_config({"dataset": "D", "output": "R", "arch": "vit_tiny", "lr": 1e-3}, "paper")
    assert config.lr == 1e-3 and config.warmup == PRESETS["paper"]["warmup"] and config.stop_epoch == 300
    assert resolve_train_config({"dataset": "D", "arch": "vit_tiny", "iterations": 5}).stop_epoch is None
    assert resolve_train_config({"dataset": "D", "arch": "vit_tiny", "iterations": 5, "epochs": 9}).stop_epoch == 300
    with pytest.raises(ValueError, match="give --sam-checkpoint"):
        resolve_train_config({"dataset": "D"})
