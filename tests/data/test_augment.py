"""masam's own augmentation policy (issue 27): labels follow the image, erasing fills zeros and keeps
labels, draws come from the generator alone, and the policy is chosen by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masam.data.augment import AugmentConfig, MasamAugment, StackAugmenter, _warp, masam_augment


def _stack() -> tuple[torch.Tensor, torch.Tensor]:
    """The label map drawn in grey (0, 1/3, 2/3), one slice different from the others."""
    label = torch.zeros(5, 64, 64, dtype=torch.long)
    label[:, 10:30, 8:40] = 1
    label[:, 35:55, 30:58] = 2
    label[2, 20:40, 20:30] = 1
    return (label.float() / 3)[:, None].contiguous(), label


GEOMETRY_ONLY = MasamAugment(p_gamma=0.0, p_erase=0.0, num_ops=0)


@pytest.mark.parametrize(
    "config",
    [
        MasamAugment(p_rot_flip=1.0, p_rotate=0.0, p_gamma=0.0, p_erase=0.0, num_ops=0),
        MasamAugment(p_rot_flip=0.0, p_rotate=1.0, p_gamma=0.0, p_erase=0.0, num_ops=0),
    ],
    ids=["rot_flip", "rotate"],
)
def test_labels_follow_the_image_under_geometric_ops(config):
    image, label = _stack()
    moved = 0
    for seed in range(6):
        out_image, out_label = masam_augment(image, label, torch.Generator().manual_seed(seed), config)
        assert out_image.shape == image.shape and out_label.dtype == torch.long
        recovered = torch.round(out_image[:, 0] * 3).long()
        assert (recovered == out_label).float().mean() > 0.97
        moved += not torch.equal(out_label, label)
    assert moved >= 4


def test_one_grid_moves_image_and_labels_for_shear_scale_and_translation():
    image, label = _stack()
    matrix = torch.tensor([[1.0, 0.2], [0.0, 1.0]]) / 1.1
    out_image, out_label = _warp(image, label, matrix, torch.tensor([0.1, -0.2]))
    assert not torch.equal(out_label, label)
    assert (torch.round(out_image[:, 0] * 3).long() == out_label).float().mean() > 0.97


def test_erasing_fills_zeros_and_keeps_labels():
    image, label = _stack()
    image = image + 0.1  # so that the erased box (0) shows everywhere
    config = MasamAugment(p_rot_flip=0.0, p_rotate=0.0, p_gamma=0.0, p_erase=1.0, num_ops=0)
    out_image, out_label = masam_augment(image, label, torch.Generator().manual_seed(0), config)
    erased = out_image[:, 0] == 0
    area = erased[0].float().mean().item()
    assert torch.equal(out_label, label)
    assert 0.01 < area <= 0.21 and all(torch.equal(erased[0], erased[d]) for d in range(5))
    assert torch.equal(out_image[:, 0][~erased], image[:, 0][~erased])


def test_intensity_ops_keep_labels_and_stay_in_range():
    image, label = _stack()
    config = MasamAugment(p_rot_flip=0.0, p_rotate=0.0, p_erase=0.0, p_gamma=1.0, num_ops=2)
    changed = 0
    for seed in range(10):
        out_image, out_label = masam_augment(image, label, torch.Generator().manual_seed(seed), config)
        assert out_image.min() >= 0 and out_image.max() <= 1
        changed += not torch.allclose(out_image, image)
        if torch.equal(out_label, label):  # no geometric op drawn: the classes keep their order of grey
            means = [out_image[:, 0][label == c].mean() for c in range(3)]
            assert means[0] <= means[1] <= means[2]
    assert changed >= 8


def test_the_stream_is_a_function_of_the_generator():
    image, label = _stack()
    augmenter = StackAugmenter(AugmentConfig(policy="masam"))
    a = augmenter(image, label, torch.Generator().manual_seed(5))
    b = augmenter(image, label, torch.Generator().manual_seed(5))
    c = augmenter(image, label, torch.Generator().manual_seed(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


def test_probabilities_over_many_draws(monkeypatch):
    """Each step at its probability: the share of stacks it changes, over 600 draws."""
    image, label = _stack()
    n = 600
    rot = sum(
        not torch.equal(masam_augment(image, label, torch.Generator().manual_seed(s), GEOMETRY_ONLY)[1], label)
        for s in range(n)
    )
    # rot/flip (p .5) or rotation (p .5): unchanged only when neither is drawn
    assert abs(rot / n - 0.75) < 4 * np.sqrt(0.75 * 0.25 / n)
