"""The builder (masam.model.build): the parameter counts of the original vit_b."""

from __future__ import annotations

from masam.model import ModelConfig, count_parameters
from masam.model.build import build_model


def test_parameter_counts_match_the_original_vit_b():
    counts = count_parameters(build_model(ModelConfig("vit_b", 512, num_classes=4, rank=32)))
    assert counts["total"] == {"total": 116_347_985, "trainable": 29_069_137}
    assert counts["fact"]["trainable"] == 73_728
    assert counts["adapters"]["trainable"] == 24_818_688
    assert counts["mask_decoder"]["trainable"] == 4_170_501
    assert counts["prompt_encoder"]["trainable"] == 6_220
    assert counts["image_encoder"]["trainable"] == 0
