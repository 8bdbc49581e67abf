"""The encoder's inference rewrites that must not change a number."""

from __future__ import annotations

import pytest
import torch

from masam.model.image_encoder import relative_position_bias, window_partition, window_unpartition


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [(14, 14), (4, 6), (32, 32), (20, 17)])  # one-hot GEMM, then spread-and-add
def test_relative_position_bias_is_exactly_the_broadcast_sum(size, dtype):
    h, w = size
    gen = torch.Generator().manual_seed(0)
    rel_h = torch.randn(3, 2, h, w, h, generator=gen).to(dtype)
    rel_w = torch.randn(3, 2, h, w, w, generator=gen).to(dtype)
    expected = torch.empty(3, 2, h * w, h * w, dtype=dtype)
    for i in range(h):
        for j in range(w):
            # query (i, j) against key (k, l): rel_h[..., i, j, k] + rel_w[..., i, j, l], k-major
            expected[:, :, i * w + j] = (rel_h[:, :, i, j, :, None] + rel_w[:, :, i, j, None, :]).reshape(3, 2, -1)
    assert torch.equal(relative_position_bias(rel_h, rel_w), expected)


def test_unpartitioned_crop_is_contiguous_and_equal():
    x = torch.randn(2, 10, 9, 8)
    windows, padded = window_partition(x, 4)
    back = window_unpartition(windows, 4, padded, (10, 9))
    # contiguous: under CPU autocast a linear on the strided crop took a batched path that copied
    # its weight once per row
    assert back.is_contiguous() and torch.equal(back, x)
