"""The allocator modes: "reuse" keeps freed blocks for the next tensor, "lean" gives them back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from masam.allocator import configure_allocator, training_policy

# How many pages fault in for a 100 MB result made after three others were freed, and how much
# resident memory is left after it is freed too.
PROBE = """
import sys, resource, torch
from masam.allocator import configure_allocator, training_policy
assert configure_allocator(sys.argv[1])
x = torch.ones(25_000_000)
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
base = rss()
for _ in range(3):  # the steady state of a repeated pass: a 100 MB result made and freed
    y = x * 2
    del y
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
y = x * 2
del y
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, rss() - base)
"""
PAGES = 100_000_000 // 4096


def probe(mode: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    faults, kept = out.stdout.split()
    return int(faults), int(kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_reuse_mode_keeps_freed_blocks_and_lean_mode_returns_them():
    faults, kept = probe("system")
    assert faults > PAGES // 2 and kept < 20_000_000  # glibc maps each large block anew
    faults, kept = probe("reuse")
    assert faults < PAGES // 20 and kept > 90_000_000  # the block stays and is reused, without faults
    faults, kept = probe("lean")
    assert faults > PAGES // 2 and kept < 20_000_000


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="allocator mode"):
        configure_allocator("fast")


def test_training_policy_is_lean_for_checkpointing_and_lean_forward_otherwise():
    assert training_policy("auto", grad_checkpoint=True) == ("lean", "lean")
    assert training_policy("auto", grad_checkpoint=False) == ("lean", "reuse")
    assert training_policy("reuse", grad_checkpoint=True) == ("reuse", "reuse")
    with pytest.raises(ValueError, match="host allocator"):
        training_policy("system", grad_checkpoint=False)
