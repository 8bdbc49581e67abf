"""Settings declared once: every field has its flag, --help shows the real defaults in groups,
given options are told apart from defaults, presets name real fields."""

from __future__ import annotations

import dataclasses
import re

import pytest

from masam.cli import COMMANDS, build_parser, main
from masam.infer.config import PredictConfig
from masam.options import check_presets, given_settings, option_name, setting, settings_from
from masam.train import PRESETS, TrainConfig, TrainSession, resolve_train_config
from masam.train.config import GROUPS


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def _sub(name: str):
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[name]


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


def test_flags_read_right_and_name_their_value(capsys):
    """Issue 28: a flag's default says whether the flag is in effect; a renamed option's metavar
    is its own name."""
    text = _help(capsys, "train")
    assert "--exclude-background leave the background out of the Dice loss (the original keeps it in) " \
        "(default: off)" in text
    assert "--no-augment switch the training augmentation off (default: off)" in text
    assert "--processes PROCESSES cases preprocessed" in text and "PREPROCESS_PROCESSES" not in text
    assert "--exclude-background leave the background out of the Dice loss (the original keeps it in) " \
        "(default: on, preset scratch)" in _help(capsys, "train", "--preset", "scratch")
    assert "--no-postprocessing do not apply the run's postprocessing.json (masam postprocess) (default: off)" in \
        _help(capsys, "predict")


def test_other_commands_are_generated_with_their_defaults(capsys):
    assert set(COMMANDS) == {"convert", "prepare", "preprocess", "predict", "evaluate", "train", "demo", "params",
                             "ensemble", "postprocess", "report", "check", "export", "install"}  # fmt: skip
    assert "{btcv,prostate,endovis,pancreas} SRC DST" in " ".join(_help(capsys, "prepare").split())  # positionals
    assert "(default: report.html)" in _help(capsys, "report")
    assert "(default: .nii.gz)" in _help(capsys, "ensemble")
    assert "(default: faithful)" in _help(capsys, "predict") and "(default: 2)" in _help(capsys, "predict")
    assert "(default: metrics.json in the current folder)" in _help(capsys, "evaluate")
    assert "(default: 600)" in _help(capsys, "demo")
    assert "(default: 3)" in _help(capsys, "params")  # ModelConfig's class count, declared once
    assert "(default: reference)" in _help(capsys, "export") and "(default: torch)" in _help(capsys, "predict")
    assert "$MASAM_MODELS, else ~/.masam/models" in " ".join(_help(capsys, "install").split())


def test_list_settings_take_one_or_more_values():
    args = build_parser().parse_args(["predict", "-m", "A", "B", "-i", "I", "-o", "O", "--tta"])
    assert given_settings(PredictConfig, args) == {"model": ("A", "B"), "input": "I", "output": "O", "tta": True}


def test_given_options_are_told_apart_from_defaults():
    args = build_parser().parse_args(["train", "-d", "D", "-o", "R", "--lr", "8e-4", "--no-augment", "--arch", "vit_b"])
    given = given_settings(TrainConfig, args)
    assert given == {"dataset": "D", "output": "R", "lr": 8e-4, "augment": False, "arch": "vit_b"}  # 8e-4 = default
    argv = ["train", "-d", "D", "-o", "R", "--ct-window", "-50", "200", "--sam-checkpoint", "s"]
    args = build_parser().parse_args(argv)
    assert given_settings(TrainConfig, args)["ct_window"] == (-50.0, 200.0)


def test_preset_then_given_options_and_iterations_without_epochs():
    config = resolve_train_config({"dataset": "D", "output": "R", "arch": "vit_tiny", "lr": 1e-3}, "paper")
    assert config.lr == 1e-3 and config.warmup == PRESETS["paper"]["warmup"] and config.stop_epoch == 300
    assert resolve_train_config({"dataset": "D", "arch": "vit_tiny", "iterations": 5}).stop_epoch is None
    assert resolve_train_config({"dataset": "D", "arch": "vit_tiny", "iterations": 5, "epochs": 9}).stop_epoch == 300
    with pytest.raises(ValueError, match="give --sam-checkpoint"):
        resolve_train_config({"dataset": "D"})


def test_presets_are_checked_against_the_field_names():
    check_presets(TrainConfig, PRESETS)
    with pytest.raises(TypeError, match=r"preset 'typo': TrainConfig has no fields \['learning_rate'\]"):
        check_presets(TrainConfig, {"typo": {"learning_rate": 1e-3}})

    @dataclasses.dataclass
    class Small:
        a: int = setting(1, "a number", "g")

    assert settings_from(Small, {"a": 2}, {"a": 3}).a == 3
    with pytest.raises(TypeError):
        settings_from(Small, {"b": 2})
