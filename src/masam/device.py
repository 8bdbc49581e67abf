"""Devices and memory: which device a name means, and whether an error means memory ran out."""

from __future__ import annotations

import torch

from .errors import DeviceError

# CPU allocation failures reach Python as a plain RuntimeError (PyTorch raises
# torch.OutOfMemoryError only for accelerators); these are the CPU allocator's messages.
_CPU_OOM_MESSAGES = ("DefaultCPUAllocator: not enough memory", "DefaultCPUAllocator: can't allocate memory")


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, with a clear error when CUDA (or MPS) is asked for but absent. ``"auto"``
    (issue 24): CUDA when PyTorch sees a GPU, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!s} was asked for, but no CUDA GPU is available to PyTorch here")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!s} was asked for, but MPS is not available here")
    return dev


def is_out_of_memory(err: BaseException) -> bool:
    """True for an accelerator's ``torch.OutOfMemoryError`` and for the CPU allocator's failure."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err) for m in _CPU_OOM_MESSAGES)


def free_cached_memory(device: torch.device) -> None:
    """Hand the caching allocator's unused blocks back (after an out-of-memory error)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
