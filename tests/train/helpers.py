"""Shared by the training tests: the tiny model's options, a run's trained weights, exact equality."""

from __future__ import annotations

from pathlib import Path

import torch

TINY = ["--arch", "vit_tiny", "--image-size", "64", "--rank", "4", "--warmup", "3", "--workers", "0", "--quiet"]


def trained(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "training_state.pt", weights_only=True)
    return state["model"]


def assert_same(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if atol == 0.0:
            assert torch.equal(a[key], b[key]), key
        else:
            assert torch.allclose(a[key], b[key], atol=atol, rtol=0), key
