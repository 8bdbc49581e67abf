"""The allocator modes, each in a fresh process: "reuse" keeps freed blocks in the heap for the next
tensor, "lean" maps each large block on its own and gives it back, "system" is glibc's default.
Read off page faults and glibc's own accounting (``mallinfo2``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import subprocess
import sys

import pytest

from masam.allocator import configure_allocator, training_policy

# A 100 MB tensor x, then 30 cycles of a 100 MB result made from it and freed (the steady state of
# repeated passes). Prints the MiB mapped outside the heap while x lives, each cycle's page faults,
# and the MiB left free in the heap after the last cycle.
PROBE = """
import ctypes, json, resource, sys, torch
from masam.allocator import configure_allocator
FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]
libc = ctypes.CDLL(sys.argv[2])
libc.mallinfo2.restype = MallInfo2
assert configure_allocator(sys.argv[1])
x = torch.ones(25_000_000)
mapped = libc.mallinfo2().hblkhd >> 20
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = x * 2
    del y
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"mapped": mapped, "faults": faults, "heap_free": libc.mallinfo2().fordblks >> 20}))
"""
PAGES = 100_000_000 // 4096  # the pages of one result


def glibc() -> str | None:
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        return name if hasattr(ctypes.CDLL(name), "mallinfo2") else None
    except OSError:
        return None


def probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode, glibc()], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


needs_glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or glibc() is None, reason="mallopt and mallinfo2 are glibc's (2.33+)"
)


@needs_glibc
@pytest.mark.parametrize("mode", ["system", "lean"])
def test_system_and_lean_modes_map_each_large_block_anew(mode):
    result = probe(mode)
    assert result["mapped"] >= 95  # x has a mapping of its own
    assert all(f > PAGES // 2 for f in result["faults"])  # every result is faulted in afresh
    assert result["heap_free"] < 20  # and given back when freed


@needs_glibc
def test_reuse_mode_keeps_freed_blocks_in_the_heap_for_the_next_tensor():
    result = probe("reuse")
    assert result["mapped"] < 20  # x lives in the heap
    # Small allocations sometimes split a freed block, so the heap grows a few times before the
    # cycle settles (1 to 3 of 30 cycles faulted in 25 runs); after that no cycle faults.
    faulted = sum(f > PAGES // 2 for f in result["faults"])
    assert faulted <= 10, result["faults"]
    assert result["heap_free"] >= 95  # the freed result stays in the process


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="allocator mode"):
        configure_allocator("fast")


def test_training_policy_is_lean_for_checkpointing_and_lean_forward_otherwise():
    assert training_policy("auto", grad_checkpoint=True) == ("lean", "lean")
    assert training_policy("auto", grad_checkpoint=False) == ("lean", "reuse")
    assert training_policy("reuse", grad_checkpoint=True) == ("reuse", "reuse")
    with pytest.raises(ValueError, match="host allocator"):
        training_policy("system", grad_checkpoint=False)
