"""Official SAM checkpoints (``sam_vit_{b,l,h}_*.pth``): reading PyTorch files safely, telling the
arch, and loading SAM's weights as the frozen base, resized to the model's image size.

PyTorch files are only ever read with ``torch.load(..., weights_only=True)``.

A SAM base may also come as safetensors (:func:`save_sam_base`): only the frozen image-encoder
tensors a fine-tuned model takes from SAM, as they are in the SAM file, so that a shared model can
carry its base without a pickle (issue 26).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..fileio import atomic_path
from .config import ARCHS
from .masam import MASAM, is_pretrained_encoder_weight

# Decoder-head tensors whose shapes depend on the class count; a group is dropped (left at its
# initialisation) when any of its tensors does not fit the model.
HEAD_GROUPS = (
    "mask_decoder.mask_tokens.",
    "mask_decoder.output_hypernetworks_mlps.",
    "mask_decoder.iou_prediction_head.",
)


def reinit_decoder_head(model: MASAM) -> None:
    """Mask tokens, hypernetwork MLPs and IoU head back to PyTorch's initialisation (draws from
    torch's global generator), as the original always leaves them at 512² (build_sam.py:129-145)."""
    decoder = model.mask_decoder
    for part in (decoder.mask_tokens, decoder.output_hypernetworks_mlps, decoder.iou_prediction_head):
        for module in part.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()


def read_torch_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a PyTorch file, refusing anything but plain tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # PyTorch's message advises weights_only=False, which a user must never follow: not shown
        if zipfile.is_zipfile(path) or path.read_bytes()[:1] == b"\x80":  # a zip archive or a pickle
            raise CheckpointError(
                f"{path}: refused: the file holds objects other than tensors, and only plain tensor files "
                f"are loaded (weights_only=True)"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (a text file?)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, struct.error, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from None
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dictionary of tensors (a state dict)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def is_official_sam(state: dict[str, torch.Tensor]) -> bool:
    return "image_encoder.patch_embed.proj.weight" in state and "mask_decoder.iou_token.weight" in state


def infer_arch(state: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """The registry arch of a SAM state dict, from its embedding width and block count."""
    embed_dim = state["image_encoder.patch_embed.proj.weight"].shape[0]
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    for name, arch in ARCHS.items():
        if arch.embed_dim == embed_dim and arch.depth == depth:
            return name
    raise CheckpointError(f"{path}: no known architecture has {depth} blocks of width {embed_dim}")


def sam_class_count(state: dict[str, torch.Tensor]) -> int:
    """Foreground classes of a SAM decoder head (its mask tokens minus one)."""
    return state["mask_decoder.mask_tokens.weight"].shape[0] - 1


def base_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes and values of the pre-trained image-encoder tensors, as they
    are in the SAM file (before any resizing)."""
    digest = hashlib.sha256()
    for key in sorted(k for k in state if k.startswith("image_encoder.") and is_pretrained_encoder_weight(k)):
        tensor = state[key].detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def _resize_to(key: str, value: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """Resize a position table to ``shape`` the way MA-SAM does (bilinear, align_corners=False);
    None when the tensor is not one that may be resized."""
    if key == "image_encoder.pos_embed" and value.ndim == 4 and value.shape[3] == shape[3]:
        grid = value.permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(shape[1], shape[2]), mode="bilinear", align_corners=False)
        return grid.permute(0, 2, 3, 1)
    if key.endswith((".attn.rel_pos_h", ".attn.rel_pos_w")) and value.ndim == 2 and value.shape[1] == shape[1]:
        table = F.interpolate(value[None, None].float(), size=tuple(shape), mode="bilinear", align_corners=False)
        return table[0, 0]
    return None


def _select_fitting(model: MASAM, state: dict[str, torch.Tensor], path) -> dict[str, torch.Tensor]:
    """The SAM tensors to load, position tables resized; head groups only where they fit."""
    own = model.state_dict()
    selected: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(key.startswith(g) for g in HEAD_GROUPS):
            if key in own and value.shape == own[key].shape:
                selected[key] = value
            continue
        if key not in own:
            raise CheckpointError(f"{path}: unexpected tensor {key!r}: not a SAM {model.config.arch} checkpoint")
        if value.shape != own[key].shape:
            resized = _resize_to(key, value, own[key].shape)
            if resized is None:
                raise CheckpointError(
                    f"{path}: tensor {key!r} has shape {list(value.shape)}, the {model.config.arch} model "
                    f"needs {list(own[key].shape)}"
                )
            value = resized
        selected[key] = value
    for group in HEAD_GROUPS:
        in_file = [k for k in state if k.startswith(group)]
        in_model = [k for k in own if k.startswith(group)]
        fits = all(k in state and state[k].shape == own[k].shape for k in in_model) and len(in_file) == len(in_model)
        if not fits:
            for key in in_file:
                selected.pop(key, None)
    return selected


def load_sam_weights(model: MASAM, state: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Load an official SAM state dict into ``model``; returns the base fingerprint.

    Position tables are resized to the model's image size; decoder-head groups that do not fit the
    class count are dropped (left at initialisation). Anything else that does not fit is an error.
    """
    selected = _select_fitting(model, state, path)
    missing = [
        k
        for k in model.state_dict()
        if k.startswith("image_encoder.") and is_pretrained_encoder_weight(k) and k not in selected
    ]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} image-encoder tensors are missing, e.g. {missing[0]!r}")
    model.load_state_dict(selected, strict=False)
    return base_fingerprint(state)


SAM_BASE_FORMAT = "masam-sam-base"  # the safetensors metadata of a SAM base file
_BASE_KEY = "masam_sam_base"


def sam_base_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a SAM state dict that a fine-tuned model keeps frozen (the pre-trained image
    encoder, unresized): what :func:`base_fingerprint` covers and :func:`load_sam_weights` needs."""
    return {k: v for k, v in state.items() if k.startswith("image_encoder.") and is_pretrained_encoder_weight(k)}


def save_sam_base(state: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Write :func:`sam_base_tensors` of ``state`` as safetensors (atomically); returns the base
    fingerprint, which is also stored in the file's metadata."""
    base = {k: v.detach().to("cpu").contiguous().clone() for k, v in sam_base_tensors(state).items()}
    fingerprint = base_fingerprint(base)
    with atomic_path(path) as tmp:
        save_file(base, str(tmp), metadata={_BASE_KEY: SAM_BASE_FORMAT, "fingerprint": fingerprint})
    return fingerprint


def is_sam_base_file(path: str | os.PathLike) -> bool:
    """True for a file written by :func:`save_sam_base` (a safetensors header with its marker)."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return (f.metadata() or {}).get(_BASE_KEY) == SAM_BASE_FORMAT
    except (SafetensorError, OSError, ValueError):
        return False


def read_sam_base(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a SAM base file; refused when its values do not give the fingerprint it states."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            stated = (f.metadata() or {}).get("fingerprint")
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable SAM base file (truncated or corrupt?): {err}") from None
    if "image_encoder.patch_embed.proj.weight" not in state or base_fingerprint(state) != stated:
        raise CheckpointError(f"{path}: a SAM base file whose tensors do not match its fingerprint (damaged?)")
    return state
