"""The epoch's data order, AdamW's fixed betas and the learning-rate schedule."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """The epoch's data order: a permutation drawn from (seed, epoch), padded to a multiple of the
    world size and dealt out round-robin to the processes; ``start`` skips the first items of this
    process's share (to resume inside an epoch)."""

    def __init__(self, size: int, seed: int, epoch: int, ddp_rank: int = 0, world: int = 1, start: int = 0) -> None:
        order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        padded = order + order[: (-len(order)) % world]
        self.indices = padded[ddp_rank::world][start:]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# the original's AdamW (trainer.py:64): betas are not a setting there either
ADAMW_BETAS = (0.9, 0.999)


def lr_at(step: int, base: float, warmup: int, power: float, total: int) -> float:
    """The rate optimiser step ``step`` (from 0) runs at, as in the original (trainer.py:60-113):
    it sets the rate after each step, ``base * (i + 1) / warmup`` after step ``i`` of the warm-up,
    then ``base * (1 - (i - warmup) / total) ** power``, so step ``i`` runs at the rate set after
    step ``i - 1`` and step 0 at ``base / warmup`` (``base`` without warm-up)."""
    previous = step - 1
    if previous < 0:
        return base / warmup if warmup else base
    if previous < warmup:
        return base * (previous + 1) / warmup
    return base * max(0.0, 1.0 - (previous - warmup) / max(total, 1)) ** power
