"""masam's own weights files: safetensors holding the tensors that are not in the SAM base, with
the model config, the input spec and a fingerprint of the base SAM weights in the header."""

from __future__ import annotations

import json
import os
import struct

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..fileio import atomic_path
from ..spec import InputSpec
from .config import ModelConfig
from .masam import MASAM, is_pretrained_encoder_weight

FORMAT_NAME = "masam"
FORMAT_VERSION = 1
_METADATA_KEY = "masam"


def is_safetensors(path: str | os.PathLike) -> bool:
    """True when the file starts like a safetensors file (header length, then a JSON object)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length < 100_000_000 and head[8:9] == b"{"


def save_weights(model: MASAM, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write the model's own tensors (all but the frozen SAM base), its config and input spec as
    safetensors. ``metadata`` (JSON-serialisable, default ``model.metadata``) is stored beside them."""
    config = model.config
    tensors = {
        k: v.detach().to("cpu").contiguous().clone()
        for k, v in model.state_dict().items()
        if not (config.pretrained_encoder and is_pretrained_encoder_weight(k))
    }
    metadata = dict(metadata if metadata is not None else model.metadata)
    spec = model.input_spec
    if spec is not None and spec.normalization and "normalization" not in metadata:
        # masam before InputSpec read only this key; masam now reads the spec alone
        metadata["normalization"] = dict(spec.normalization[0])
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": config.to_dict(),
        "base_fingerprint": model.base_fingerprint if config.pretrained_encoder else None,
        "metadata": metadata,
    }
    if spec is not None:
        header["input_spec"] = spec.to_dict()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_METADATA_KEY: json.dumps(header)})


def _check_header(raw: str, path: str | os.PathLike) -> dict:
    try:
        header = json.loads(raw)
        if header.get("format") != FORMAT_NAME:
            raise ValueError("wrong format name")
        if int(header.get("version", 0)) > FORMAT_VERSION:
            raise CheckpointError(f"{path}: written by a newer masam (format version {header['version']})")
        ModelConfig.from_dict(header["config"])
        if header.get("input_spec") is not None:
            InputSpec.from_dict(header["input_spec"])
    except CheckpointError:
        raise
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: malformed masam metadata: {err}") from None
    return header


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
    return tensors, _check_header(raw, path)


def read_header(path: str | os.PathLike) -> dict:
    """The header of one of our weights files (config, metadata, input spec), tensors unread."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            raw = (f.metadata() or {}).get(_METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {err}") from None
    if raw is None:
        raise CheckpointError(f"{path}: a safetensors file without masam metadata (not written by masam)")
    return _check_header(raw, path)


def header_input_spec(header: dict, config: ModelConfig) -> InputSpec:
    """The file's input spec; files written before specs existed get one derived from their
    ``metadata["normalization"]`` and config."""
    if header.get("input_spec") is not None:
        return InputSpec.from_dict(header["input_spec"])
    return InputSpec.from_legacy(header.get("metadata") or {}, config.slices, config.image_size)


def load_own_tensors(model: MASAM, tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
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
