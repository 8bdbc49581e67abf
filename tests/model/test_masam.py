"""Shapes, the MA-SAM parts' behaviour, and which weights train."""

from __future__ import annotations

import pytest
import torch

from masam.model import ModelConfig, build_model
from masam.model.masam import parameter_group
from tests.model.helpers import randomise, tiny


@pytest.mark.parametrize("b,d", [(1, 1), (1, 5), (2, 3)])
def test_output_shapes(b, d):
    model = tiny(num_classes=3).eval()
    with torch.no_grad():
        out = model(torch.rand(b, d, 3, 64, 64))
    assert out["logits"].shape == (b, d, 4, 64, 64)
    assert out["iou_predictions"].shape == (b, d, 4)
    assert torch.isfinite(out["logits"]).all()


def test_bad_input_shapes_are_refused():
    model = tiny().eval()
    with pytest.raises(ValueError, match=r"\[B, D, 3, H, W\]"):
        model(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="64x64"):
        model(torch.rand(1, 2, 3, 48, 48))
    with pytest.raises(ValueError, match="boxes"):
        model(torch.rand(1, 2, 3, 64, 64), boxes=torch.zeros(1, 3, 4))


def test_box_prompt_steers_only_its_slice():
    model = randomise(tiny()).eval()
    x = torch.rand(1, 3, 3, 64, 64)
    boxes = torch.tensor([[[4.0, 4.0, 30.0, 40.0], [10.0, 10.0, 50.0, 50.0], [float("nan")] * 4]])
    moved = boxes.clone()
    moved[0, 0] = torch.tensor([20.0, 20.0, 60.0, 60.0])
    with torch.no_grad():
        a = model(x, boxes=boxes)["logits"]
        b = model(x, boxes=moved)["logits"]
        none = model(x)["logits"]
    assert not torch.allclose(a[0, 0], b[0, 0])
    assert torch.equal(a[0, 1:], b[0, 1:])
    assert not torch.allclose(a[0, 2], none[0, 2])  # "no box" is a not-a-point token, not nothing


def test_frozen_and_trainable_sets():
    model = tiny()
    for name, p in model.named_parameters():
        group = parameter_group(name)
        assert p.requires_grad == (group != "image_encoder"), name
    assert not model.image_encoder.pos_embed.requires_grad
    assert not model.image_encoder.blocks[0].attn.qkv.weight.requires_grad
    assert model.image_encoder.blocks[0].attn.fact_q.weight.requires_grad
    scratch = build_model(ModelConfig("vit_tiny", 64, 2, rank=4, pretrained_encoder=False))
    assert all(p.requires_grad for p in scratch.parameters())


def test_backward_reaches_only_trainable_weights_and_checkpointing_keeps_gradients():
    model = randomise(tiny(fact_dropout=0.0)).train()
    x = torch.rand(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(5))

    def grads(checkpointing):
        model.zero_grad(set_to_none=True)
        model.set_grad_checkpointing(checkpointing)
        model(x)["logits"].square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads(False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and not (frozen & plain.keys())
    assert plain["image_encoder.fact.v.weight"].abs().sum() > 0
    assert plain["image_encoder.blocks.0.adapter_attn.conv.weight"].abs().sum() > 0
    checkpointed = grads(True)
    assert plain.keys() == checkpointed.keys()
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6, rtol=1e-4), name


def test_a_wrong_slice_size_says_the_size_the_model_takes():
    model = tiny(image_size=32)
    with pytest.raises(ValueError, match=r"^this model takes 32x32 slices \(its image size\), got 64x64: resize "):
        model(torch.rand(1, 5, 3, 64, 64))
