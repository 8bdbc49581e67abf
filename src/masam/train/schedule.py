"""The epoch's data order and the learning-rate schedule."""

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


def lr_at(step: int, base: float, warmup: int, power: float, total: int) -> float:
    """The original's schedule: linear warm-up, then ``(1 - (step - warmup) / total) ** power``."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, 1.0 - (step - warmup) / max(total, 1)) ** power
