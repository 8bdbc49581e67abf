"""The random-number state saved with the training state (masam.train.state): restored, every
generator continues exactly where it was."""

from __future__ import annotations

import random

import numpy as np
import torch

from masam.train.state import rng_state, set_rng_state


def _draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), np.random.rand(2).tolist()


def test_a_saved_state_restores_every_generator():
    torch.manual_seed(1), random.seed(2), np.random.seed(3)
    state = rng_state()
    first = _draws()
    assert _draws() != first  # the generators moved on
    set_rng_state(state)
    assert _draws() == first


def test_the_state_is_plain_tensors_and_values_for_weights_only_loading(tmp_path):
    path = tmp_path / "state.pt"
    torch.save(rng_state(), path)
    first = _draws()
    set_rng_state(torch.load(path, weights_only=True))
    assert _draws() == first
