"""Issue 24: masam's training step against the original's loop body, side by side: from the same
weights and the same (augmented) batch, dropout off, five optimiser steps give the same losses,
the same rates and the same trained weights. The original side is the literal loop of
:mod:`tests.train.reference_step` on the literal model of :mod:`tests.model.reference_masam`."""

from __future__ import annotations

import re

import pytest
import torch

from masam.model.masam import parameter_group
from masam.model.original_format import _our_name
from masam.train import TrainConfig, Trainer
from tests.conftest import official_sam_state
from tests.data.helpers import make_dataset
from tests.train.reference_step import original_steps

_PARTS = {"norm": "norm", "down": "linear_down", "conv": "conv", "up": "linear_up"}


def _original_name(name: str) -> str:
    """Our name of a tensor -> the original's (the inverse of ``original_format._our_name``)."""
    if m := re.fullmatch(r"image_encoder\.blocks\.(\d+)\.attn\.fact_([qv])\.weight", name):
        return f"{m.group(2)}_FacTs_{int(m.group(1)):03d}"
    if m := re.fullmatch(r"image_encoder\.fact\.([uv])\.weight", name):
        return f"image_encoder.FacT{m.group(1)}.weight"
    if m := re.fullmatch(r"image_encoder\.blocks\.(\d+)\.adapter_(attn|mlp)\.(\w+)\.(weight|bias)", name):
        block, which, part, kind = m.groups()
        suffix = "_2" if which == "mlp" else ""
        return f"image_encoder.ImageEncoderViT.blocks.{block}.Block.adapter_{_PARTS[part]}{suffix}.{kind}"
    return name


def _original_files(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(SAM's file, the original's fine-tuned file) holding ``state``."""
    sam, adapter = {}, {}
    for name, value in state.items():
        group = parameter_group(name)
        if group == "image_encoder":
            sam[name] = value.clone()
            continue
        key = _original_name(name)
        assert _our_name(key, "-") == name  # the inverse of the mapping checked against the original's files
        adapter[key] = value.clone()
        if group in ("prompt_encoder", "mask_decoder"):
            sam[key] = value.clone()
    return sam, adapter


@pytest.mark.slow
def test_five_training_steps_match_the_originals_loop(tmp_path):
    sam_path = tmp_path / "sam.pth"
    torch.save(official_sam_state("vit_tiny", 64, seed=2, num_mask_tokens=3), sam_path)
    config = TrainConfig(
        dataset=str(make_dataset(tmp_path / "D", cases=2, shape=(3, 16, 16))), output=str(tmp_path / "run"),
        sam_checkpoint=str(sam_path), image_size=64, rank=4, fact_dropout=0.0, augment=False, workers=0,
        iterations=5, warmup=2, val_fraction=0.0, val_every=0, reinit_head=True, precision="fp32", device="cpu",
        check_dataset=False,
    )  # fmt: skip
    trainer = Trainer(config, progress=False)
    trainer.setup()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every trained tensor away from its initial value (FacT's v starts at zero)
        for p in trainer.model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    sam, adapter = _original_files(trainer.model.state_dict())
    grey = torch.rand(2, 5, 64, 64, generator=generator)  # [B, D, S, S], as the original's loader gives it
    label = (grey > 0.45).long() + (grey > 0.8).long()
    batch = {"image": grey[:, :, None].expand(-1, -1, 3, -1, -1).contiguous(), "label": label}

    metrics = [trainer.train_step(batch) for _ in range(5)]

    losses, trained = original_steps(
        sam, adapter, grey, label, 5, image_size=64, heads=4, window=4, global_blocks=(1, 3), base_lr=config.lr,
        warmup_period=2, lr_exp=config.power, max_iterations=5,
    )  # fmt: skip
    assert [m["loss"] for m in metrics] == pytest.approx(losses, rel=1e-5)
    assert [m["lr"] for m in metrics] == pytest.approx([4e-4, 4e-4, 8e-4, 8e-4, 8e-4 * 0.8**7])
    ours = {_original_name(n): p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert set(ours) == set(trained)  # AdamW's parameter set is the original's
    initial = {k: v for k, v in adapter.items() if k in ours}
    # float32 gradients of two implementations differ in the last bits; Adam divides each by its own
    # size, so compare each tensor's update (after - before) by its norm: 1e-3 of it. Attention key
    # biases are left out: softmax ignores a constant added to every key, so their gradient is zero
    # up to rounding, and Adam turns rounding noise into steps of up to the rate
    keys = [k for k in ours if not k.endswith("k_proj.bias")]
    assert len(keys) == len(ours) - 7  # 7 attention layers in the decoder's transformer
    still = sorted(k for k in keys if torch.equal(trained[k], initial[k]))  # no gradient: AdamW skips them
    assert all(torch.equal(ours[k], initial[k]) for k in still), still
    # the IoU head (its output is in no loss) and the prompt encoder's box, point and mask inputs
    assert all(k.startswith(("mask_decoder.iou_prediction_head.", "prompt_encoder.")) for k in still), still
    assert "prompt_encoder.no_mask_embed.weight" not in still and len(still) < len(keys) // 2
    relative = {k: ((ours[k] - trained[k]).norm() / (trained[k] - initial[k]).norm()).item() for k in keys}
    assert max(relative.values()) < 1e-3, sorted(relative.items(), key=lambda kv: -kv[1])[:5]
