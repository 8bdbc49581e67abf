"""Fine-tuned files written by the original MA-SAM code: ``q_FacTs_000``, ``image_encoder.FacTu``,
``...ImageEncoderViT.blocks.N.Block.adapter_*``, ``prompt_encoder.*``, ``mask_decoder.*``; renamed
to masam's names, with what their shapes say about the model."""

from __future__ import annotations

import os
import re

import torch

from ..errors import CheckpointError

_ORIGINAL_ADAPTER = re.compile(
    r"image_encoder\.ImageEncoderViT\.blocks\.(\d+)\.Block\.adapter_(norm|linear_down|conv|linear_up)(_2)?\.(weight|bias)$"
)
_ADAPTER_PARTS = {"norm": "norm", "linear_down": "down", "conv": "conv", "linear_up": "up"}


def is_original_masam(state: dict[str, torch.Tensor]) -> bool:
    return "q_FacTs_000" in state or "image_encoder.FacTu.weight" in state


def _our_name(key: str, path: str | os.PathLike) -> str:
    if m := re.fullmatch(r"([qv])_FacTs_(\d+)", key):
        return f"image_encoder.blocks.{int(m.group(2))}.attn.fact_{m.group(1)}.weight"
    if key in ("image_encoder.FacTu.weight", "image_encoder.FacTv.weight"):
        return "image_encoder.fact." + ("u" if "FacTu" in key else "v") + ".weight"
    if m := _ORIGINAL_ADAPTER.match(key):
        block, part, second, kind = m.groups()
        adapter = "adapter_mlp" if second else "adapter_attn"
        return f"image_encoder.blocks.{block}.{adapter}.{_ADAPTER_PARTS[part]}.{kind}"
    if key.startswith(("prompt_encoder.", "mask_decoder.")):
        return key
    raise CheckpointError(f"{path}: unexpected tensor {key!r} for an original MA-SAM file")


def convert_original_state(
    state: dict[str, torch.Tensor], path: str | os.PathLike
) -> tuple[dict[str, torch.Tensor], dict]:
    """Rename an original MA-SAM fine-tuned state dict to our names.

    Returns the renamed tensors and what the shapes say: ``rank``, ``num_classes``,
    ``adapter_width``, ``embed_dim``, ``depth`` (ViT blocks). Key order does not matter.
    """
    out = {_our_name(key, path): value for key, value in state.items()}
    try:
        u = state["image_encoder.FacTu.weight"]
        info = {
            "rank": u.shape[0],
            "embed_dim": u.shape[1],
            "num_classes": state["mask_decoder.mask_tokens.weight"].shape[0] - 1,
            "adapter_width": state["image_encoder.ImageEncoderViT.blocks.0.Block.adapter_linear_down.weight"].shape[0],
            "depth": sum(1 for k in state if re.fullmatch(r"q_FacTs_\d+", k)),
        }
    except KeyError as err:
        raise CheckpointError(f"{path}: original MA-SAM file without {err.args[0]!r}") from None
    return out, info
