"""Devices by name (masam.device): one clear error for an absent accelerator, out of memory told apart."""

from __future__ import annotations

import pytest
import torch

from masam.device import is_out_of_memory, resolve_device
from masam.errors import DeviceError


def test_a_device_name_becomes_a_torch_device_and_an_absent_gpu_is_one_clear_error(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="device cuda:1 was asked for, but no CUDA GPU is available"):
        resolve_device("cuda:1")


def test_out_of_memory_is_told_apart_from_other_errors():
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
