"""The encoder's inference rewrites that must not change a number."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from masam.model import image_encoder
from masam.model.image_encoder import (
    Adapter3D,
    Attention,
    FacTFactors,
    relative_position_bias,
    window_partition,
    window_unpartition,
)
from tests.model.helpers import randomise, sam_attention, tiny


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


def test_fact_is_a_no_op_at_initialisation():
    model = randomise(tiny(), skip=("fact.v.",)).eval()
    x = torch.rand(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert torch.count_nonzero(model.image_encoder.fact.v.weight) == 0
    with torch.no_grad():
        base = model(x)["logits"]
        for block in model.image_encoder.blocks:  # other cores and U: still no effect while V = 0
            block.attn.fact_q.weight.mul_(3.0)
            block.attn.fact_v.weight.normal_()
        model.image_encoder.fact.u.weight.normal_()
        assert torch.equal(model(x)["logits"], base)
        model.image_encoder.fact.v.weight.normal_(std=0.1)
        assert not torch.allclose(model(x)["logits"], base, atol=1e-6)


def test_folded_fact_in_eval_equals_unfolded_fact_in_training():
    model = randomise(tiny(fact_dropout=0.0))
    x = torch.rand(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        folded = model.eval()(x)["logits"]
        unfolded = model.train()(x)["logits"]
    assert torch.allclose(folded, unfolded, atol=1e-5, rtol=1e-4)


def test_fact_in_training_gives_the_written_out_delta_and_its_gradients():
    """qkv + s * [V Cq U x, 0, V Cv U x], with the delta added into qkv in place."""
    torch.manual_seed(4)
    attn, fact = Attention(32, 4, (6, 6), rank=4, fact_scale=0.7, fact_dropout=0.0), FacTFactors(32, 4)
    for p in [*attn.parameters(), *fact.parameters()]:
        torch.nn.init.normal_(p, std=0.3)
    attn.train()
    x = torch.randn(2, 6, 6, 32)
    weights = torch.randn(2, 6, 6, 96)
    ours = attn._qkv(x, fact)
    u, v = fact.u.weight, fact.v.weight
    delta_q = 0.7 * x @ (v @ attn.fact_q.weight @ u).t()
    delta_v = 0.7 * x @ (v @ attn.fact_v.weight @ u).t()
    written_out = attn.qkv(x) + torch.cat([delta_q, torch.zeros_like(delta_q), delta_v], dim=-1)
    assert torch.allclose(ours, written_out, atol=1e-5, rtol=1e-4)
    params = [fact.u.weight, fact.v.weight, attn.fact_q.weight, attn.fact_v.weight, attn.qkv.weight, attn.qkv.bias]
    ours_grads = torch.autograd.grad((ours * weights).sum(), params)
    reference_grads = torch.autograd.grad((written_out * weights).sum(), params)
    for a, b in zip(ours_grads, reference_grads):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bias_bytes", [2**28, 170_000, 1_000])  # one bias for all, one per image, none
@pytest.mark.parametrize("window", [0, 4])
def test_attention_paths_with_and_without_autograd_agree(window, bias_bytes, monkeypatch):
    """Inference adds the relative position as an SDPA bias, built for as many images at a time
    as BIAS_BYTES allows, or as extra q/k columns where one image's bias is larger; training always
    uses the columns. All must be SAM's attention, windowed with padding (10 is not a multiple of
    4) or global, and the columns path must give SAM's gradients."""
    monkeypatch.setattr(image_encoder, "BIAS_BYTES", bias_bytes)
    torch.manual_seed(0)
    size = (window or 10, window or 10)
    attn, fact = Attention(32, 4, size, rank=4, window_size=window), FacTFactors(32, 4)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(std=0.3)
    attn.eval()
    x = torch.randn(2, 10, 10, 32)
    with torch.no_grad():
        bias_path = attn(x, fact)
    x_grad = x.clone().requires_grad_()
    columns_path = attn(x_grad, fact)
    assert torch.allclose(bias_path, columns_path, atol=1e-5, rtol=1e-4)
    if window == 0:
        x_ref = x.clone().requires_grad_()
        reference = sam_attention(attn, x_ref)
        assert torch.allclose(bias_path, reference, atol=1e-5, rtol=1e-4)
        weights = torch.randn_like(reference)
        (columns_path * weights).sum().backward()
        (reference * weights).sum().backward()
        assert torch.allclose(x_grad.grad, x_ref.grad, atol=1e-5, rtol=1e-4)


def test_residual_stream_is_channels_last_in_memory_through_every_block():
    """The patch embedding's permuted output used to set the layout of the whole residual stream
    (adds keep their first input's strides): every LayerNorm and linear then copied it first."""
    model = tiny().eval()
    seen = []
    for block in model.image_encoder.blocks:
        block.register_forward_hook(lambda _, args, out: seen.append((args[0].is_contiguous(), out.is_contiguous())))
    with torch.no_grad():
        model(torch.rand(1, 5, 3, 64, 64))
    assert seen == [(True, True)] * len(model.image_encoder.blocks)


def test_fact_scale_multiplies_the_delta():
    model = randomise(tiny(fact_dropout=0.0)).eval()
    x = torch.rand(2, 64, 64, 96)
    attn, fact = model.image_encoder.blocks[0].attn, model.image_encoder.fact
    with torch.no_grad():
        base = torch.nn.functional.linear(x, attn.qkv.weight, attn.qkv.bias)
        attn.fact_scale = 1.0
        d1 = attn._qkv(x, fact) - base
        attn.fact_scale = 2.5
        d2 = attn._qkv(x, fact) - base
        expected_q = fact.v(attn.fact_q(fact.u(x)))
    assert torch.allclose(d1[..., :96], expected_q, atol=1e-5)
    assert torch.allclose(d1[..., 96:192], torch.zeros(()), atol=1e-5)  # k untouched
    assert torch.allclose(d2, 2.5 * d1, atol=1e-5)


def test_adapter_equals_conv3d_over_slices():
    torch.manual_seed(0)
    adapter = Adapter3D(32, 16)
    with torch.no_grad():
        adapter.conv.weight.normal_(std=0.2)
        adapter.conv.bias.normal_(std=0.2)
    b, d, h, w = 2, 4, 3, 5
    x = torch.randn(b * d, h, w, 32)
    y = adapter.down(adapter.norm(x)).reshape(b, d, h, w, 16).permute(0, 4, 1, 2, 3)
    y = F.conv3d(y, adapter.conv.weight, adapter.conv.bias, padding=(1, 0, 0))
    y = y.permute(0, 2, 3, 4, 1).reshape(b * d, h, w, 16)
    expected = x + adapter.up(F.gelu(y))
    with torch.no_grad():
        assert torch.allclose(adapter(x, d), expected, atol=1e-5)


@pytest.mark.parametrize("kernel", [1, 5])
def test_adapter_of_other_kernels_equals_conv3d(kernel):
    torch.manual_seed(0)
    adapter = Adapter3D(16, 8, kernel)
    with torch.no_grad():
        adapter.conv.weight.normal_(std=0.2)
    x = torch.randn(2 * 4, 3, 3, 16)
    y = adapter.down(adapter.norm(x)).reshape(2, 4, 3, 3, 8).permute(0, 4, 1, 2, 3)
    y = F.conv3d(y, adapter.conv.weight, adapter.conv.bias, padding=(kernel // 2, 0, 0))
    expected = x + adapter.up(F.gelu(y.permute(0, 2, 3, 4, 1).reshape(8, 3, 3, 8)))
    with torch.no_grad():
        assert torch.allclose(adapter(x, 4), expected, atol=1e-5)


def test_adapters_mix_neighbouring_slices_only_within_a_stack():
    model = randomise(tiny()).eval()
    x = torch.rand(2, 3, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    changed = x.clone()
    changed[0, 0] = torch.rand(3, 64, 64)
    with torch.no_grad():
        a, b = model(x)["logits"], model(changed)["logits"]
        assert not torch.allclose(a[0, 1], b[0, 1])  # slice 1 sees slice 0 through the adapters
        assert torch.equal(a[1], b[1])  # the other stack does not
        for block in model.image_encoder.blocks:  # without the side taps slices are independent
            for adapter in (block.adapter_attn, block.adapter_mlp):
                adapter.conv.weight[:, :, 0].zero_()
                adapter.conv.weight[:, :, 2].zero_()
        a, b = model(x)["logits"], model(changed)["logits"]
    assert torch.allclose(a[0, 1:], b[0, 1:], atol=1e-6)


@pytest.mark.parametrize("path", ["sdpa", "sdpa-bias", "sdpa-columns"])
def test_attention_paths_by_name_equal_the_reference_with_gradients(path):
    """Each named fast path against the package's plain reference attention (materialised scores
    with SAM's decomposed relative position), on a whole model: outputs and gradients."""
    model = randomise(tiny(fact_dropout=0.0)).train()
    x = torch.rand(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(6))

    def run(name):
        model.zero_grad(set_to_none=True)
        model.set_attention(name)
        logits = model(x)["logits"]
        logits.square().mean().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ref_logits, ref_grads = run("reference")
    logits, grads = run(path)
    assert torch.allclose(logits, ref_logits, atol=1e-5, rtol=1e-4)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        assert torch.allclose(grads[name], ref_grads[name], atol=1e-5, rtol=1e-3), name
    with pytest.raises(ValueError, match="attention must be one of"):
        model.set_attention("flash")


def test_reference_attention_is_sams_written_out():
    torch.manual_seed(0)
    attn, fact = Attention(32, 4, (10, 10), rank=4), FacTFactors(32, 4)
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(std=0.3)
    attn.eval().path = "reference"
    x = torch.randn(2, 10, 10, 32)
    with torch.no_grad():
        assert torch.allclose(attn(x, fact), sam_attention(attn, x), atol=1e-5, rtol=1e-4)
