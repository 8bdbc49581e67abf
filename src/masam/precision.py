"""The numeric precisions masam computes in, by name, and the autocast dtype of each (None: float32
without autocast). Shared by prediction, training and the command line.

Two names that are not precisions of their own, each with one meaning:

* ``"auto"`` (prediction, the default of ``masam predict`` and of ``Predictor``): the fastest
  precision that keeps the answer, :func:`resolve_inference_precision`: bf16 where the hardware
  computes bf16 dot products natively (a CPU with avx512_bf16 or AMX, a CUDA GPU that supports
  bf16), fp32 elsewhere, where bf16 would only be emulated and slower.
* ``"mixed"`` (training, the paper preset's): the original's mixed precision,
  :func:`resolve_training_precision`: fp16 with TF32 on CUDA, fp32 on the CPU. ``masam train``
  still takes ``auto`` for it (run folders written before issue 25 store that name).
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# Training's names of the original's mixed precision: "mixed", and "auto" as run folders before issue 25 say.
MIXED = ("mixed", "auto")


def resolve_training_precision(name: str, device: torch.device) -> str:
    """A precision name for training on ``device``: ``mixed`` (the original's mixed precision,
    issue 12; also spelt ``auto``, :data:`MIXED`) is fp16 on CUDA, bf16 on a CUDA GPU without fast
    fp16 (compute capability below 5.3) that has bf16, and fp32 on the CPU (or where neither is
    available); any other name is returned as given."""
    if name not in MIXED:
        return name
    if device.type != "cuda":
        return "fp32"
    if torch.cuda.get_device_capability(device) >= (5, 3):
        return "fp16"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp32"


def allow_tf32(enabled: bool = True) -> None:
    """TF32 matrix products and convolutions on CUDA (the original forces both on, train.py:52-59)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled

# What the command line offers: a precision by name, or "auto".
PRECISION_CHOICES: tuple[str, ...] = ("auto", *PRECISIONS)

# x86 flags (as /proc/cpuinfo spells them) of instructions that compute bf16 dot products.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags of the first processor in ``cpuinfo`` (empty where it cannot be read,
    e.g. on macOS or Windows)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # "Features" on ARM
            return frozenset(value.split())
    return frozenset()


def cpu_has_native_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """True where the CPU has bf16 dot-product instructions (avx512_bf16 or AMX). ``flags``
    defaults to this machine's (:func:`cpu_flags`)."""
    return bool(NATIVE_BF16_FLAGS & set(cpu_flags() if flags is None else flags))


def resolve_inference_precision(name: str, device: str | torch.device = "cpu") -> str:
    """A precision name for prediction on ``device`` (issue 17; training's ``mixed`` is
    :func:`resolve_training_precision`): ``"auto"`` becomes ``"bf16"`` where bf16 is native (see the
    module docstring) and ``"fp32"`` elsewhere; the other names are returned unchanged. Raises
    ConfigError (a ValueError) for an unknown name."""
    if name not in PRECISION_CHOICES:
        raise ConfigError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {name!r}")
    if name != "auto":
        return name
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


# Modules whose weights autocast casts to the reduced dtype at every call (linear and convolution
# run in the reduced dtype under autocast); normalisation and embeddings are left in float32.
_CAST_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


def prepare_for_precision(model: nn.Module, precision: str) -> nn.Module:
    """A copy of ``model`` for inference under :func:`autocast` of ``precision``.

    The weights and biases of its linear and convolution layers are cast once to the precision's
    dtype, so autocast finds them already cast instead of casting every frozen weight at every
    forward pass. The arithmetic is autocast's, except that weights derived from several
    parameters (FacT folded into qkv) are formed from already-rounded factors. The copy shares
    every other parameter with ``model``, which is left as it was (the float32 originals of the
    cast weights are freed with it). For inference only: do not train the copy. fp32 returns
    ``model`` itself.
    """
    dtype = PRECISIONS[precision]
    if dtype is None:
        return model
    memo: dict[int, object] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if isinstance(module, _CAST_MODULES):
                memo[id(param)] = nn.Parameter(param.detach().to(dtype), requires_grad=False)
            else:
                memo[id(param)] = param  # shared, not copied
    # deepcopy with the parameters pre-filled copies the module tree and buffers only
    return copy.deepcopy(model, memo)


def autocast(precision: str, device: str | torch.device = "cpu") -> contextlib.AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a null context for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
