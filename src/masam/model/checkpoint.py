"""``load_model``: the one way a model is built from files (training, prediction, conversion and
the demo all call it), and ``convert_original``.

Three kinds of file, one module each: official SAM checkpoints (:mod:`.sam_format`), fine-tuned
files of the original MA-SAM code (:mod:`.original_format`) and masam's safetensors
(:mod:`.masam_format`). An arch that differs from the file's is refused the same way for all.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..device import resolve_device
from ..errors import CheckpointError, ConfigError
from ..spec import InputSpec
from .build import build_model
from .config import ARCHS, ModelConfig, model_default, refuse_unknown_settings
from .masam import MASAM
from .masam_format import header_input_spec, is_safetensors, load_own_tensors, read_weights, save_weights
from .original_format import convert_original_state, is_original_masam
from .sam_format import (
    infer_arch,
    is_official_sam,
    is_sam_base_file,
    load_sam_weights,
    read_sam_base,
    read_torch_file,
    sam_class_count,
)

__all__ = [
    "CheckpointError",
    "sam_checkpoint_arch",
    "convert_original",
    "load_model",
    "read_torch_file",
    "read_weights",
    "save_weights",
]

class _Sam:
    """A SAM checkpoint read once: its path, tensors and arch (all None without one). Also a SAM
    base file (:func:`.sam_format.save_sam_base`: the frozen encoder only, as a shared model carries it)."""

    def __init__(self, path: str | os.PathLike | None, arch: str | None) -> None:
        self.path, self.state, self.arch, self.base_only = path, None, None, False
        if path is None:
            return
        self.base_only = Path(path).is_file() and is_safetensors(path) and is_sam_base_file(path)
        self.state = read_sam_base(path) if self.base_only else read_torch_file(path)
        if not self.base_only and not is_official_sam(self.state):
            hint = " (an original MA-SAM file: pass it as weights)" if is_original_masam(self.state) else ""
            raise CheckpointError(f"{path}: not a SAM checkpoint{hint}")
        self.arch = infer_arch(self.state, path)
        _refuse_other_arch(path, self.arch, arch)

    def load_into(self, model: MASAM) -> str:
        return load_sam_weights(model, self.state, self.path)


def sam_checkpoint_arch(path: str | os.PathLike, arch: str | None = None) -> str:
    """The arch of the SAM checkpoint at ``path``; :class:`CheckpointError` (one line) when it is
    not a readable SAM checkpoint or holds another arch than ``arch``."""
    return _Sam(path, arch).arch


def _refuse_other_arch(path, held: str, asked: str | None) -> None:
    if asked is not None and asked != held:
        raise CheckpointError(f"{path}: holds a {held} model, but arch {asked} was asked for")


def _fresh_model(sam: _Sam, arch: str | None, num_classes: int | None, settings: dict) -> MASAM:
    """A new model: SAM's weights with fresh FacT and adapters, or all random without SAM."""
    if sam.state is None:
        if arch is None or num_classes is None:
            raise ConfigError("without a SAM checkpoint or weights, give arch and num_classes")
        return build_model(ModelConfig(arch, num_classes=num_classes, pretrained_encoder=False, **settings))
    if num_classes is None:
        if sam.base_only:
            raise ConfigError(f"{sam.path}: a SAM base file holds no decoder head: give num_classes")
        num_classes = sam_class_count(sam.state)
    model = build_model(ModelConfig(sam.arch, num_classes=num_classes, **settings))
    model.base_fingerprint = sam.load_into(model)
    return model


def _masam_file_model(weights: Path, sam: _Sam, arch: str | None) -> MASAM:
    tensors, header = read_weights(weights)
    config = ModelConfig.from_dict(header["config"])
    _refuse_other_arch(weights, config.arch, arch)
    if sam.arch is not None and config.pretrained_encoder and sam.arch != config.arch:
        raise CheckpointError(
            f"{weights}: was fine-tuned from a SAM {config.arch} checkpoint, but {sam.path} is {sam.arch}"
        )
    model = build_model(config)
    if config.pretrained_encoder:
        if sam.state is None:
            raise CheckpointError(
                f"{weights}: fine-tuned from a SAM {config.arch} checkpoint; give that checkpoint too "
                f"(sam_checkpoint / --sam-checkpoint)"
            )
        model.base_fingerprint = sam.load_into(model)
        expected = header.get("base_fingerprint")
        if expected and expected != model.base_fingerprint:
            raise CheckpointError(
                f"{weights}: was fine-tuned from a different SAM checkpoint than {sam.path} "
                f"(base fingerprint {expected[:12]}, given {model.base_fingerprint[:12]})"
            )
    load_own_tensors(model, tensors, weights)
    model.metadata = header.get("metadata") or {}
    model.input_spec = header_input_spec(header, config)
    return model


def _original_file_model(weights: Path, sam: _Sam, image_size: int, scale: float) -> MASAM:
    original = read_torch_file(weights)
    if not is_original_masam(original):
        hint = " (it is a SAM checkpoint: pass it as sam_checkpoint)" if is_official_sam(original) else ""
        raise CheckpointError(f"{weights}: neither a masam weights file nor an original MA-SAM file{hint}")
    if sam.state is None:
        raise CheckpointError(f"{weights}: an original MA-SAM file needs its SAM base checkpoint (sam_checkpoint)")
    renamed, info = convert_original_state(original, weights)
    base = ARCHS[sam.arch]
    if (info["embed_dim"], info["depth"]) != (base.embed_dim, base.depth):
        raise CheckpointError(
            f"{weights}: adapters for {info['depth']} blocks of width {info['embed_dim']}, but "
            f"{sam.path} is {sam.arch} ({base.depth} blocks of width {base.embed_dim})"
        )
    config = ModelConfig(
        sam.arch, image_size, info["num_classes"], info["rank"], scale, adapter_width=info["adapter_width"]
    )
    model = build_model(config)
    model.base_fingerprint = sam.load_into(model)
    load_own_tensors(model, renamed, weights)
    # the original code's input convention; its modality is not in the file
    model.input_spec = InputSpec(slices=config.slices, image_size=config.image_size, convention="original")
    return model


def load_model(
    sam_checkpoint: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    model_options: dict | None = None,
    **settings,
) -> MASAM:
    """Build an MA-SAM model in eval mode.

    * ``sam_checkpoint`` only: SAM's weights with fresh FacT, adapters and (if the class count
      differs from the file's) a fresh decoder head; ``num_classes`` defaults to the file's.
    * ``weights`` in our format: config and input spec from the file (the settings and
      ``num_classes`` are ignored); ``sam_checkpoint`` is needed unless the model
      was trained from random initialisation, and must be the base it was fine-tuned from.
    * ``weights`` written by the original MA-SAM: class count and rank come from the tensor
      shapes, ``image_size`` and ``scale`` from the settings; ``sam_checkpoint`` is needed.
    * neither: a randomly initialised ``arch`` (for training from scratch).

    ``arch``, when given, must be the file's. ``settings`` (and ``model_options``, the same as a
    dict): the :class:`ModelConfig` fields of a new model (:data:`.config.CHOSEN`: ``image_size``,
    ``rank``, ``scale``, ``fact_dropout``, ``adapter_kernel``, ``slices``, ``label_names`` ...);
    those not given take ModelConfig's defaults.
    """
    dev = resolve_device(device)
    settings = {**(model_options or {}), **settings}
    refuse_unknown_settings(settings)
    sam = _Sam(sam_checkpoint, arch)
    if weights is None:
        model = _fresh_model(sam, arch, num_classes, settings)
    elif not Path(weights).is_file():
        raise CheckpointError(f"{weights}: no such file")
    elif is_safetensors(weights):
        model = _masam_file_model(Path(weights), sam, arch)
    else:
        size, scale = (settings.get(k, model_default(k)) for k in ("image_size", "scale"))
        model = _original_file_model(Path(weights), sam, size, scale)
    return model.eval().to(dev)


def convert_original(
    sam_checkpoint: str | os.PathLike,
    original_weights: str | os.PathLike,
    output: str | os.PathLike,
    *,
    image_size: int = model_default("image_size"),
    scale: float = model_default("scale"),
) -> MASAM:
    """Turn an original MA-SAM file into our format (tied to the given SAM base; its input spec
    keeps the original's convention)."""
    model = load_model(sam_checkpoint, original_weights, image_size=image_size, scale=scale)
    save_weights(model, output)
    return model

