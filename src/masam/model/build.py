"""Architecture registry and the model builder (the counterpart of SAM's ``build_sam.py``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import ConfigError
from .image_encoder import ImageEncoderViT3D
from .masam import MASAM
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer

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
    """Everything needed to rebuild a model; stored with our weights files.

    ``pretrained_encoder``: True when the image encoder comes from a SAM checkpoint (its
    pre-trained weights are then frozen and not stored with the fine-tuned weights); False for a
    model trained from random initialisation, where every weight trains and is stored.
    """

    arch: str = "vit_b"
    image_size: int = 512
    num_classes: int = 3
    rank: int = 32
    scale: float = 1.0
    adapter_width: int | None = None  # None: the arch's default
    fact_dropout: float = 0.1
    adapter_kernel: int = 3  # taps over the slice axis; 1 = 2D adapters (no third dimension)
    slices: int = 5
    pretrained_encoder: bool = True
    label_names: dict[str, int] = field(default_factory=dict)

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


def build_model(config: ModelConfig) -> MASAM:
    """A freshly initialised MA-SAM model (train mode, pre-trained parts frozen when
    ``config.pretrained_encoder``)."""
    arch = ARCHS[config.arch]
    grid = config.image_size // PATCH_SIZE
    encoder = ImageEncoderViT3D(
        img_size=config.image_size,
        patch_size=PATCH_SIZE,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        global_attn_indexes=arch.global_attn_indexes,
        window_size=arch.window_size,
        adapter_width=config.adapter_width,
        rank=config.rank,
        fact_scale=config.scale,
        fact_dropout=config.fact_dropout,
        out_chans=PROMPT_DIM,
        adapter_kernel=config.adapter_kernel,
    )
    prompt_encoder = PromptEncoder(PROMPT_DIM, (grid, grid), (config.image_size, config.image_size))
    decoder = MaskDecoder(
        PROMPT_DIM,
        config.num_classes,
        TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, num_heads=8, mlp_dim=2048),
    )
    model = MASAM(encoder, prompt_encoder, decoder, config)
    model.set_trainable()
    return model
