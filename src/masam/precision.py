"""The numeric precisions masam computes in, by name, and the autocast dtype of each (None: float32
without autocast). Shared by prediction, training and the command line."""

from __future__ import annotations

import torch

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
