"""The model builder (the counterpart of SAM's ``build_sam.py``); the architectures and settings it
builds from are in :mod:`.config`."""

from __future__ import annotations

from .config import ARCHS, PATCH_SIZE, PROMPT_DIM, ModelConfig
from .image_encoder import ImageEncoderViT3D
from .masam import MASAM
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer


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
