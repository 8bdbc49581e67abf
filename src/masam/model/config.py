"""Settings of the model commands ``masam convert`` and ``masam params``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..options import setting
from .build import ModelConfig

_MODEL_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


@dataclass
class ConvertConfig:
    sam_checkpoint: str = setting(help="the SAM .pth the original model was fine-tuned from", group="files")
    weights: str = setting(help="the original MA-SAM .pth (q_FacTs_000, ...)", group="files")
    output: str = setting(help="output .safetensors file", group="files", short="-o")
    image_size: int = setting(_MODEL_DEFAULTS["image_size"], "image size the model was trained at", "model")
    scale: float = setting(_MODEL_DEFAULTS["scale"], "FacT scale s used in training", "model")


@dataclass
class ParamsConfig:
    arch: str = setting(_MODEL_DEFAULTS["arch"], "vit_b, vit_l, vit_h or vit_tiny", "model")
    image_size: int = setting(_MODEL_DEFAULTS["image_size"], "input size", "model")
    num_classes: int = setting(_MODEL_DEFAULTS["num_classes"], "foreground classes", "model")
    rank: int = setting(_MODEL_DEFAULTS["rank"], "FacT rank", "model")
