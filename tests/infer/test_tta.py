"""Test-time mirroring: it acts (a flipped input gives the flipped prediction), it is the mean
over the flips, and it leaves a flip-equivariant function alone."""

from __future__ import annotations

import itertools

import pytest
import torch

from masam.infer import Predictor
from masam.infer.ensemble import volume_probs_fn
from masam.infer.tta import mirror_axes, mirrored, mirrored_probabilities
from tests.infer.test_ensemble import tiny_model


class PositionBiased:
    """A fake model that is not flip-equivariant: logits mix the image with fixed ramps along
    slices, rows and columns, so flipping the input does not flip the output. Counts its calls."""

    def __init__(self, classes: int = 3):
        self.classes = classes
        self.calls = 0

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        s, _, h, w = volume.shape
        ramp_s = torch.linspace(-1, 2, s)[:, None, None]
        ramp_h = torch.linspace(0, 3, h)[None, :, None] ** 2
        ramp_w = torch.linspace(-2, 1, w)[None, None, :]
        image = volume.mean(1)
        logits = torch.stack(
            [image * (k + 1) + ramp_s * k + ramp_h * (k - 1) + ramp_w * (2 - k) for k in range(self.classes)], 1
        )
        return torch.softmax(logits, 1)


FLIPS = [(0,), (2,), (3,), (2, 3), (0, 2, 3)]


def test_without_tta_a_flipped_input_does_not_give_the_flipped_prediction():
    fn = PositionBiased()
    x = torch.rand(5, 1, 8, 9, generator=torch.Generator().manual_seed(0))
    for dims in FLIPS:
        assert not torch.allclose(fn(x.flip(dims)), fn(x).flip(dims), atol=1e-3)


@pytest.mark.parametrize("dims", FLIPS)
def test_with_tta_a_flipped_input_gives_the_flipped_prediction(dims):
    fn = mirrored(PositionBiased())
    x = torch.rand(5, 1, 8, 9, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(fn(x.flip(dims)), fn(x).flip(dims), atol=1e-6)
    assert torch.equal(fn(x.flip(dims)).argmax(1), fn(x).flip(dims).argmax(1))


def test_tta_is_the_mean_over_the_eight_flips():
    fake = PositionBiased()
    x = torch.rand(4, 2, 6, 7, generator=torch.Generator().manual_seed(2))
    expected = torch.zeros(4, 3, 6, 7)
    subsets = [c for r in range(4) for c in itertools.combinations((0, 2, 3), r)]
    for dims in subsets:  # written out independently: flip, run, flip back
        out = fake(torch.flip(x, dims)) if dims else fake(x)
        expected += torch.flip(out, dims) if dims else out
    expected /= len(subsets)
    fake.calls = 0
    got = mirrored_probabilities(fake, x)
    assert fake.calls == 8 and torch.allclose(got, expected, atol=1e-6)
    fake.calls = 0
    in_plane = mirrored(fake, slice_flip=False)(x)
    assert fake.calls == 4 and not torch.allclose(in_plane, got, atol=1e-4)
    assert sorted(mirror_axes(False)) == [(), (2,), (2, 3), (3,)]


def test_an_equivariant_function_is_unchanged():
    def pointwise(v):
        return torch.softmax(torch.cat([v, -v, v**2], 1), 1)

    x = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(mirrored(pointwise)(x), pointwise(x), atol=1e-6)


def test_a_real_model_with_tta_is_flip_equivariant():
    predictor = Predictor(tiny_model(4), batch_size=6)
    x = torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    plain = volume_probs_fn(predictor)
    assert not torch.allclose(plain(x.flip(3)), plain(x).flip(3), atol=1e-4)  # the model alone is not
    tta = mirrored(plain)
    assert torch.allclose(tta(x.flip(0, 3)), tta(x).flip(0, 3), atol=1e-5)


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="expected a volume"):
        mirrored(PositionBiased())(torch.rand(5, 8, 9))
    with pytest.raises(ValueError, match="returned shape"):
        mirrored(lambda v: v[:, :, :4])(torch.rand(2, 1, 8, 8))
