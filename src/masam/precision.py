"""The numeric precisions masam computes in, by name, and the autocast dtype of each (None: float32
without autocast). Shared by prediction, training and the command line."""

from __future__ import annotations

import torch

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    """A precision name for ``device``: ``auto`` (the original's mixed precision, issue 12) is fp16
    on CUDA, bf16 on a CUDA GPU without fast fp16 (compute capability below 5.3) that has bf16,
    and fp32 on the CPU (or where neither is available); any other name is returned as given."""
    if name != "auto":
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
