"""Settings declared once: every field has its flag, --help shows the real defaults in groups,
given options are told apart from defaults, presets name real fields."""

from __future__ import annotations

import dataclasses

import pytest

from masam.cli import COMMANDS, build_parser, main
from masam.infer.config import PredictConfig
from masam.options import check_presets, given_settings, setting, settings_from
from masam.train import PRESETS, TrainConfig


def _help(capsys, *argv) -> str:
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def _sub(name: str):
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[name]


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
