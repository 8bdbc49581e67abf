"""How glibc's malloc treats the large host blocks that hold tensors: fast reuse or a lean heap.

By default glibc serves blocks above a moving threshold (at most 32 MiB) with a fresh ``mmap``,
page-faulted in on first use and returned on free, and the rest from a heap that is never
compacted. Two settings serve masam's two needs (figures from the project's 2-core machine, vit_b,
a 5-slice stack at 512²):

* ``"reuse"`` (prediction, training without checkpointing): no ``mmap``, no trimming, so freed
  blocks stay in the process and the next pass reuses them. An encoder pass no longer takes
  ~1.2 million page faults; it was 11.0 s against 16.3 s in one back-to-back comparison.
  Small allocations sometimes split a freed block, so the heap grows during the first few passes
  before it settles (a vit_b encoder at 256²: 0.94 GiB after one pass, 0.98 GiB from the third on).
* ``"lean"`` (training with gradient checkpointing, whose point is memory): every block of 8 MiB
  or more gets its own ``mmap`` and goes back to the system when freed. With checkpointing the
  encoder keeps one 15.7 MiB block input per layer; in a heap these pin the space between them,
  and the heap grew to 2.4 GiB holding 0.8 GiB of live tensors. Lean, the step's peak resident
  memory fell from 3.4 to 1.8 GiB (``benchmarks/results/training_step.json`` has the timed figures).
* ``"system"``: glibc's defaults, untouched.

Each command sets its mode once, with :func:`allocator_policy` around the whole command.
Training switches between modes (:data:`TRAINING_POLICIES`, ``masam train --host-allocator``)
explicitly in its step, around the forward pass and around backward:
what the forward pass allocates and keeps for backward is what fragments the heap, so
``"lean-forward"`` is lean while the forward pass builds the graph and reuses in backward, whose
blocks are short-lived. Measured on one vit_b step (``benchmarks/results/training_step.json``
and the README's key figures): without checkpointing 8.5 GiB (reuse), 6.3 GiB (lean-forward);
with checkpointing 3.4 GiB in 35 s (reuse), 3.3 GiB (lean-forward), 2.2 GiB in 45-52 s (lean,
whose fresh pages cost 20-24 s of system time on the project's virtual machine).

Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator

from .errors import ConfigError

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
ALLOCATOR_MODES = ("reuse", "lean", "system")
# training policy -> (mode during the forward pass, mode during backward and the optimiser step)
TRAINING_POLICIES = {"reuse": ("reuse", "reuse"), "lean": ("lean", "lean"), "lean-forward": ("lean", "reuse")}
_LEAN_MMAP_THRESHOLD = 8 * 2**20
_current: str | None = None


def configure_allocator(mode: str = "reuse") -> bool:
    """Apply one of :data:`ALLOCATOR_MODES` to this process. Returns whether glibc took the setting (False
    on other C libraries, and for ``"system"`` once another mode was applied, since glibc cannot
    restore its dynamic threshold)."""
    global _current
    if mode not in ALLOCATOR_MODES:
        raise ConfigError(f"allocator mode must be one of {', '.join(ALLOCATOR_MODES)}, got {mode!r}")
    if mode == _current:
        return True
    if mode == "system":
        return _current is None
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if mode == "reuse":
        settings = [(_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)]
    else:
        settings = [(_M_MMAP_MAX, 65536), (_M_MMAP_THRESHOLD, _LEAN_MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, 128 * 2**10)]
    # mallopt returns 1 on success (musl has none; others may return 0)
    ok = all(mallopt(option, value) == 1 for option, value in settings)
    if ok:
        _current = mode
    return ok


def training_policy(choice: str, grad_checkpoint: bool) -> tuple[str, str]:
    """(forward mode, backward mode) for ``masam train --host-allocator``: ``"auto"`` is
    ``"lean"`` with gradient checkpointing (asked for to save memory) and ``"lean-forward"``
    without."""
    if choice == "auto":
        choice = "lean" if grad_checkpoint else "lean-forward"
    if choice not in TRAINING_POLICIES:
        raise ConfigError(f"host allocator must be auto or one of {', '.join(TRAINING_POLICIES)}, got {choice!r}")
    return TRAINING_POLICIES[choice]


@contextlib.contextmanager
def allocator_policy(mode: str = "reuse") -> Iterator[bool]:
    """Apply ``mode`` for one command (yields whether glibc took it). On exit the mode that was
    set before, if any, is applied again (glibc cannot go back to its own dynamic default)."""
    previous = _current
    applied = configure_allocator(mode)
    try:
        yield applied
    finally:
        if previous is not None:
            configure_allocator(previous)
