"""The model's settings, declared once: :class:`ModelConfig` (every field with its default and help),
the encoder architectures, and the settings of the model commands ``masam convert`` and
``masam params``.

A command that offers a model setting takes it with :func:`model_setting` (its default and help
come from here), and :func:`model_settings_of` hands the values back to :func:`load_model`. Add a
model setting: a field of :class:`ModelConfig`, then ``name: type = model_setting("name")`` in the
settings of each command that offers it (``TrainConfig`` for ``masam train``).

Imports nothing from the model's modules, so every module of the model (and every layer above)
can read it; the input-contract defaults (image size, slices per stack) come from :mod:`masam.spec`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..options import setting
from ..spec import IMAGE_SIZE, SLICES

PATCH_SIZE = 16
PROMPT_DIM = 256


@dataclass(frozen=True)
class EncoderArch:
    """Sizes of one ViT image encoder."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    adapter_width: int = 384


ARCHS: dict[str, EncoderArch] = {
    "vit_b": EncoderArch(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": EncoderArch(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": EncoderArch(1280, 32, 16, (7, 15, 23, 31)),
    # Not a SAM size: small enough to train from scratch on a CPU (tests and the demo).
    "vit_tiny": EncoderArch(96, 4, 4, (1, 3), window_size=4, adapter_width=48),
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored with our weights files (field order is the
    stored order).

    ``pretrained_encoder``: True when the image encoder comes from a SAM checkpoint (its
    pre-trained weights are then frozen and not stored with the fine-tuned weights); False for a
    model trained from random initialisation, where every weight trains and is stored.
    """

    arch: str = setting("vit_b", "vit_b, vit_l, vit_h or vit_tiny", "model")
    image_size: int = setting(IMAGE_SIZE, f"model input size, a multiple of {PATCH_SIZE}", "model")
    num_classes: int = setting(3, "foreground classes", "model")
    rank: int = setting(32, "FacT rank", "model")
    scale: float = setting(1.0, "FacT scale s", "model")
    adapter_width: int | None = setting(None, "adapter bottleneck width", "model", default_text="the arch's")
    fact_dropout: float = setting(0.1, "dropout on the FacT path", "model")
    adapter_kernel: int = setting(3, "adapter taps over slices; 1 = 2D only", "model")
    slices: int = setting(SLICES, "slices per stack", "model")
    pretrained_encoder: bool = setting(True, "the image encoder comes from a SAM checkpoint", "model")
    label_names: dict[str, int] = setting({}, "class names and their label values", "model")

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.image_size <= 0 or self.image_size % PATCH_SIZE:
            raise ConfigError(f"image size must be a positive multiple of {PATCH_SIZE}, got {self.image_size}")
        if self.num_classes < 1:
            raise ConfigError(f"num_classes must be at least 1, got {self.num_classes}")
        if self.rank < 1:
            raise ConfigError(f"FacT rank must be at least 1, got {self.rank}")
        if self.adapter_width is None:
            self.adapter_width = ARCHS[self.arch].adapter_width

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
# The settings chosen for a new model (the arch, class count and encoder source come from the files).
CHOSEN = tuple(n for n in _FIELDS if n not in ("arch", "num_classes", "pretrained_encoder"))


def model_default(name: str) -> Any:
    """The default of the :class:`ModelConfig` field ``name``."""
    f = _FIELDS[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def model_setting(name: str, help: str | None = None, **kwargs: Any) -> Any:  # noqa: A002 - as setting()
    """A command's setting for the :class:`ModelConfig` field ``name``: its default, help and group
    from there (``help`` and the :func:`setting` keywords may say more)."""
    meta = _FIELDS[name].metadata
    return setting(model_default(name), help or meta["help"], meta["group"], **kwargs)


def model_settings_of(settings: object) -> dict[str, Any]:
    """The values of the :data:`CHOSEN` model settings that ``settings`` (e.g. a ``TrainConfig``) holds."""
    return {name: getattr(settings, name) for name in CHOSEN if hasattr(settings, name)}


def refuse_unknown_settings(names) -> None:
    """Refuse settings of a new model that :class:`ModelConfig` does not have (one line)."""
    unknown = sorted(set(names) - set(CHOSEN))
    if unknown:
        raise ConfigError(f"unknown model options {unknown}; known: {', '.join(sorted(CHOSEN))}")


@dataclass
class ConvertConfig:
    """Settings of ``masam convert``."""

    sam_checkpoint: str = setting(help="the SAM .pth the original model was fine-tuned from", group="files")
    weights: str = setting(help="the original MA-SAM .pth (q_FacTs_000, ...)", group="files")
    output: str = setting(help="output .safetensors file", group="files", short="-o")
    image_size: int = model_setting("image_size", "image size the model was trained at")
    scale: float = model_setting("scale", "FacT scale s used in training")


@dataclass
class ParamsConfig:
    """Settings of ``masam params``."""

    arch: str = model_setting("arch")
    image_size: int = model_setting("image_size", "input size")
    num_classes: int = model_setting("num_classes")
    rank: int = model_setting("rank")
