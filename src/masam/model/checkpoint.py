"""Reading and writing weights.

Three kinds of file:

* official SAM checkpoints (``sam_vit_{b,l,h}_*.pth``): the frozen base, resized to the
  model's image size;
* fine-tuned files written by the original MA-SAM code (``q_FacTs_000``, ``image_encoder.FacTu``,
  ``...ImageEncoderViT.blocks.N.Block.adapter_*``, ``prompt_encoder.*``, ``mask_decoder.*``);
* our own: safetensors holding the tensors that are not in the base, with the model config and a
  fingerprint of the base SAM weights in the header.

PyTorch files are only ever read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import json
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

from ..fileio import atomic_path
from .build import ARCHS, ModelConfig, build_model
from .masam import MASAM, is_pretrained_encoder_weight

FORMAT_NAME = "masam"
FORMAT_VERSION = 1
_METADATA_KEY = "masam"
# Decoder-head tensors whose shapes depend on the class count; a group is dropped (left at its
# initialisation) when any of its tensors does not fit the model.
_HEAD_GROUPS = (
    "mask_decoder.mask_tokens.",
    "mask_decoder.output_hypernetworks_mlps.",
    "mask_decoder.iou_prediction_head.",
)
_ORIGINAL_ADAPTER = re.compile(
    r"image_encoder\.ImageEncoderViT\.blocks\.(\d+)\.Block\.adapter_(norm|linear_down|conv|linear_up)(_2)?\.(weight|bias)$"
)
_ADAPTER_PARTS = {"norm": "norm", "linear_down": "down", "conv": "conv", "linear_up": "up"}


class CheckpointError(ValueError):
    """A weights file that cannot be used; the message names the file and the problem."""


# --------------------------------------------------------------------------- reading files


def read_torch_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` from a PyTorch file, refusing anything but plain tensors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused: the file holds objects other than tensors, and only plain tensor files "
            f"are loaded (weights_only=True): {first}"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, struct.error) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from None
    if isinstance(obj, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dictionary of tensors (a state dict)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def is_safetensors(path: str | os.PathLike) -> bool:
    """True when the file starts like a safetensors file (header length, then a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length < 100_000_000 and head[8:9] == b"{"


def is_official_sam(state: dict[str, torch.Tensor]) -> bool:
    return "image_encoder.patch_embed.proj.weight" in state and "mask_decoder.iou_token.weight" in state


def is_original_masam(state: dict[str, torch.Tensor]) -> bool:
    return "q_FacTs_000" in state or "image_encoder.FacTu.weight" in state


# --------------------------------------------------------------------------- SAM base weights


def infer_arch(state: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """The registry arch of a SAM state dict, from its embedding width and block count."""
    embed_dim = state["image_encoder.patch_embed.proj.weight"].shape[0]
    depth = len({int(m.group(1)) for k in state if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))})
    for name, arch in ARCHS.items():
        if arch.embed_dim == embed_dim and arch.depth == depth:
            return name
    raise CheckpointError(f"{path}: no known architecture has {depth} blocks of width {embed_dim}")


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


def load_sam_weights(model: MASAM, state: dict[str, torch.Tensor], path: str | os.PathLike) -> str:
    """Load an official SAM state dict into ``model``; returns the base fingerprint.

    Position tables are resized to the model's image size; decoder-head groups that do not fit the
    class count are dropped (left at initialisation). Anything else that does not fit is an error.
    """
    own = model.state_dict()
    selected: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if any(key.startswith(g) for g in _HEAD_GROUPS):
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
    for group in _HEAD_GROUPS:
        in_file = [k for k in state if k.startswith(group)]
        in_model = [k for k in own if k.startswith(group)]
        fits = all(k in state and state[k].shape == own[k].shape for k in in_model) and len(in_file) == len(in_model)
        if not fits:
            for key in in_file:
                selected.pop(key, None)
    missing = [
        k for k in own if k.startswith("image_encoder.") and is_pretrained_encoder_weight(k) and k not in selected
    ]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} image-encoder tensors are missing, e.g. {missing[0]!r}")
    model.load_state_dict(selected, strict=False)
    return base_fingerprint(state)


# --------------------------------------------------------------------------- original MA-SAM files


def convert_original_state(
    state: dict[str, torch.Tensor], path: str | os.PathLike
) -> tuple[dict[str, torch.Tensor], dict]:
    """Rename an original MA-SAM fine-tuned state dict to our names.

    Returns the renamed tensors and what the shapes say: ``rank``, ``num_classes``,
    ``adapter_width``, ``embed_dim``, ``depth``. Key order does not matter.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := re.fullmatch(r"([qv])_FacTs_(\d+)", key):
            out[f"image_encoder.blocks.{int(m.group(2))}.attn.fact_{m.group(1)}.weight"] = value
        elif key in ("image_encoder.FacTu.weight", "image_encoder.FacTv.weight"):
            out["image_encoder.fact." + ("u" if "FacTu" in key else "v") + ".weight"] = value
        elif m := _ORIGINAL_ADAPTER.match(key):
            block, part, second, kind = m.groups()
            adapter = "adapter_mlp" if second else "adapter_attn"
            out[f"image_encoder.blocks.{block}.{adapter}.{_ADAPTER_PARTS[part]}.{kind}"] = value
        elif key.startswith(("prompt_encoder.", "mask_decoder.")):
            out[key] = value
        else:
            raise CheckpointError(f"{path}: unexpected tensor {key!r} for an original MA-SAM file")
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


# --------------------------------------------------------------------------- our format


def save_weights(model: MASAM, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write the model's own tensors (all but the frozen SAM base) and its config as safetensors.
    ``metadata`` (JSON-serialisable) is stored beside the config, e.g. modality and normalisation."""
    config = model.config
    tensors = {
        k: v.detach().to("cpu").contiguous().clone()
        for k, v in model.state_dict().items()
        if not (config.pretrained_encoder and is_pretrained_encoder_weight(k))
    }
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": config.to_dict(),
        "base_fingerprint": model.base_fingerprint if config.pretrained_encoder else None,
        "metadata": metadata if metadata is not None else model.metadata,
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(header)})


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors and header of one of our weights files."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(_METADATA_KEY)
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from None
    if raw is None:
        raise CheckpointError(f"{path}: a safetensors file without masam metadata (not written by masam)")
    try:
        header = json.loads(raw)
        if header.get("format") != FORMAT_NAME:
            raise ValueError("wrong format name")
        if int(header.get("version", 0)) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: written by a newer masam (format version {header['version']})")
        ModelConfig.from_dict(header["config"])
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: malformed masam metadata: {err}") from None
    return tensors, header


def _load_own_tensors(model: MASAM, tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Load fine-tuned tensors; every tensor the base does not supply must be there and fit."""
    own = model.state_dict()
    for key, value in tensors.items():
        if key not in own:
            raise CheckpointError(f"{path}: unexpected tensor {key!r}")
        if value.shape != own[key].shape:
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {list(value.shape)}, expected {list(own[key].shape)}"
            )
    needed = [k for k in own if not (model.config.pretrained_encoder and is_pretrained_encoder_weight(k))]
    missing = [k for k in needed if k not in tensors]
    if missing:
        raise CheckpointError(f"{path}: {len(missing)} tensors are missing, e.g. {missing[0]!r}")
    model.load_state_dict(tensors, strict=False)


# --------------------------------------------------------------------------- the public loader


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, with a clear error when CUDA is asked for but absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!s} was asked for, but no CUDA GPU is available to PyTorch here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {device!s} was asked for, but MPS is not available here")
    return dev


def load_model(
    sam_checkpoint: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    image_size: int = 512,
    rank: int = 32,
    scale: float = 1.0,
    device: str | torch.device = "cpu",
) -> MASAM:
    """Build an MA-SAM model in eval mode.

    * ``sam_checkpoint`` only: SAM's weights with fresh FacT, adapters and (if the class count
      differs from the file's) a fresh decoder head; ``num_classes`` defaults to the file's.
    * ``weights`` in our format: config from the file (``image_size``, ``rank``, ``scale`` and
      ``num_classes`` are ignored); ``sam_checkpoint`` is needed unless the model was trained
      from random initialisation, and must be the base it was fine-tuned from.
    * ``weights`` written by the original MA-SAM: class count and rank come from the tensor
      shapes, ``scale`` from the argument; ``sam_checkpoint`` is needed.
    * neither: a randomly initialised ``arch`` (for training from scratch).
    """
    dev = resolve_device(device)
    sam_state = read_torch_file(sam_checkpoint) if sam_checkpoint is not None else None
    sam_arch = None
    if sam_state is not None:
        if not is_official_sam(sam_state):
            hint = " (an original MA-SAM file: pass it as weights)" if is_original_masam(sam_state) else ""
            raise CheckpointError(f"{sam_checkpoint}: not a SAM checkpoint{hint}")
        sam_arch = infer_arch(sam_state, sam_checkpoint)
        if arch is not None and arch != sam_arch:
            raise CheckpointError(f"{sam_checkpoint}: holds a {sam_arch} model, but arch {arch} was asked for")

    fingerprint = None
    metadata: dict = {}
    if weights is None:
        if sam_state is None:
            if arch is None or num_classes is None:
                raise ValueError("without a SAM checkpoint or weights, give arch and num_classes")
            model = build_model(ModelConfig(arch, image_size, num_classes, rank, scale, pretrained_encoder=False))
        else:
            if num_classes is None:
                num_classes = sam_state["mask_decoder.mask_tokens.weight"].shape[0] - 1
            model = build_model(ModelConfig(sam_arch, image_size, num_classes, rank, scale))
            fingerprint = load_sam_weights(model, sam_state, sam_checkpoint)
    elif not Path(weights).is_file():
        raise CheckpointError(f"{weights}: no such file")
    elif is_safetensors(weights):
        tensors, header = read_weights(weights)
        config = ModelConfig.from_dict(header["config"])
        metadata = header.get("metadata") or {}
        if arch is not None and arch != config.arch:
            raise CheckpointError(f"{weights}: holds a {config.arch} model, but arch {arch} was asked for")
        if sam_arch is not None and config.pretrained_encoder and sam_arch != config.arch:
            raise CheckpointError(
                f"{weights}: was fine-tuned from a SAM {config.arch} checkpoint, but {sam_checkpoint} is {sam_arch}"
            )
        model = build_model(config)
        if config.pretrained_encoder:
            if sam_state is None:
                raise CheckpointError(
                    f"{weights}: fine-tuned from a SAM {config.arch} checkpoint; give that checkpoint too "
                    f"(sam_checkpoint / --sam-checkpoint)"
                )
            fingerprint = load_sam_weights(model, sam_state, sam_checkpoint)
            expected = header.get("base_fingerprint")
            if expected and expected != fingerprint:
                raise CheckpointError(
                    f"{weights}: was fine-tuned from a different SAM checkpoint than {sam_checkpoint} "
                    f"(base fingerprint {expected[:12]}, given {fingerprint[:12]})"
                )
        _load_own_tensors(model, tensors, weights)
    else:
        original = read_torch_file(weights)
        if not is_original_masam(original):
            hint = " (it is a SAM checkpoint: pass it as sam_checkpoint)" if is_official_sam(original) else ""
            raise CheckpointError(f"{weights}: neither a masam weights file nor an original MA-SAM file{hint}")
        if sam_state is None:
            raise CheckpointError(f"{weights}: an original MA-SAM file needs its SAM base checkpoint (sam_checkpoint)")
        renamed, info = convert_original_state(original, weights)
        base = ARCHS[sam_arch]
        if (info["embed_dim"], info["depth"]) != (base.embed_dim, base.depth):
            raise CheckpointError(
                f"{weights}: adapters for {info['depth']} blocks of width {info['embed_dim']}, but "
                f"{sam_checkpoint} is {sam_arch} ({base.depth} blocks of width {base.embed_dim})"
            )
        config = ModelConfig(
            sam_arch, image_size, info["num_classes"], info["rank"], scale, adapter_width=info["adapter_width"]
        )
        model = build_model(config)
        fingerprint = load_sam_weights(model, sam_state, sam_checkpoint)
        _load_own_tensors(model, renamed, weights)
    model.base_fingerprint = fingerprint
    model.metadata = metadata
    return model.eval().to(dev)


def convert_original(
    sam_checkpoint: str | os.PathLike,
    original_weights: str | os.PathLike,
    output: str | os.PathLike,
    *,
    image_size: int = 512,
    scale: float = 1.0,
) -> MASAM:
    """Turn an original MA-SAM file into our format (tied to the given SAM base)."""
    model = load_model(sam_checkpoint, original_weights, image_size=image_size, scale=scale)
    save_weights(model, output)
    return model
