"""The model's settings declared once (issue 25): ModelConfig's defaults and help are the ones every
command and the Python API use, and the input-contract defaults come from masam.spec."""

from __future__ import annotations

import dataclasses

import pytest

import masam
from masam.cli import build_parser
from masam.errors import ConfigError
from masam.model.config import CHOSEN, ConvertConfig, ModelConfig, ParamsConfig, model_default, model_settings_of
from masam.spec import IMAGE_SIZE, SLICES, InputSpec
from masam.train.config import TrainConfig


def _defaults(cls) -> dict:
    return {f.name: model_default(f.name) for f in dataclasses.fields(cls) if f.name in CHOSEN or f.name == "arch"}


def test_the_commands_take_the_model_settings_defaults_from_model_config():
    model = ModelConfig()
    for cls in (TrainConfig, ConvertConfig, ParamsConfig):
        instance = cls(**{f.name: "x" for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING})
        for name in _defaults(cls):
            if name != "arch" or cls is ParamsConfig:  # masam train reads the arch from SAM's file by default
                assert getattr(instance, name) == getattr(model, name), (cls.__name__, name)
    assert (model.image_size, model.slices) == (IMAGE_SIZE, SLICES) == (InputSpec().image_size, InputSpec().slices)


def test_the_train_help_shows_model_config_help_and_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"--rank RANK FacT rank (default: {ModelConfig().rank})" in help_text
    assert f"--image-size IMAGE_SIZE model input size, a multiple of 16 (default: {IMAGE_SIZE})" in help_text


def test_model_settings_of_a_train_config_are_what_load_model_takes():
    config = TrainConfig(rank=4, slices=3, image_size=32, adapter_kernel=1, fact_dropout=0.0, scale=2.0)
    settings = model_settings_of(config)
    assert settings == {"image_size": 32, "rank": 4, "scale": 2.0, "fact_dropout": 0.0, "adapter_kernel": 1,
                        "slices": 3}  # fmt: skip
    model = masam.load_model(arch="vit_tiny", num_classes=2, **settings)
    assert {k: getattr(model.config, k) for k in settings} == settings


def test_load_model_without_settings_builds_model_config_defaults_and_refuses_unknown_ones():
    model = masam.load_model(arch="vit_tiny", num_classes=2, image_size=32)
    defaults = ModelConfig(arch="vit_tiny", image_size=32, num_classes=2, pretrained_encoder=False)
    assert model.config == defaults
    with pytest.raises(ConfigError, match=r"unknown model options \['ranks'\]"):
        masam.load_model(arch="vit_tiny", num_classes=2, ranks=4)
