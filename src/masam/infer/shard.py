"""Prediction split across processes: job arrays (``--num-parts K --part-id I``) and torchrun.

Cases are split by nnU-Net's convention: sorted, part ``I`` of ``K`` takes ``cases[I::K]``. Under
``torchrun --nproc_per_node N -m masam predict`` each rank (``RANK`` of ``WORLD_SIZE``) takes its
share of the part in the same way, so every case is predicted exactly once, by the same code as in
one process; the process group (gloo on the CPU, nccl on CUDA) only gathers the reports.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

from ..errors import ConfigError

T = TypeVar("T")


def select_part(cases: Sequence[T], num_parts: int, part_id: int) -> list[T]:
    """Part ``part_id`` of ``num_parts``: the sorted ``cases`` from ``part_id`` on, every
    ``num_parts``-th (may be empty when there are more parts than cases)."""
    if num_parts < 1:
        raise ConfigError(f"--num-parts must be at least 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise ConfigError(f"--part-id must be between 0 and {num_parts - 1} (--num-parts {num_parts}), got {part_id}")
    return sorted(cases)[part_id::num_parts]


def distributed_part() -> tuple[int, int]:
    """``(WORLD_SIZE, RANK)`` as torchrun sets them; ``(1, 0)`` in a process started alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"inconsistent torchrun environment: RANK {rank} of WORLD_SIZE {world}")
    return world, rank


def rank_device(device: str) -> str:
    """The device of this rank: under torchrun a bare ``cuda`` becomes ``cuda:LOCAL_RANK``, so that
    the ranks of one machine use one GPU each."""
    if device == "cuda" and distributed_part()[0] > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


@contextlib.contextmanager
def process_group(device: str) -> Iterator[tuple[int, int]]:
    """Join torchrun's process group for the duration (nothing when started alone); yields
    ``(world, rank)``."""
    world, rank = distributed_part()
    started = world > 1 and not dist.is_initialized()
    if started:
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(torch.device(rank_device(device)))
        dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield world, rank
    finally:
        if started:
            dist.destroy_process_group()


def gather(value: T) -> list[T]:
    """Every rank's ``value``, in rank order (``[value]`` when alone)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out
