"""masam's augmentation against a literal re-implementation of the original's (reference_augment.py),
op by op and as a whole pipeline, plus the draws' probabilities and ranges over many stacks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from masam.data import augment as aug
from masam.data.augment import AugmentConfig, StackAugmenter
from tests.data import reference_augment as ref


def _stack(seed=0, d=5, h=48, w=40):
    """A smooth grey stack with structure (so interpolation and contrast matter) and labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.3 * np.sin(xx / 5.0) * np.cos(yy / 7.0)
    image = np.stack([base + 0.1 * rng.random((h, w)) + 0.02 * i for i in range(d)]).clip(0, 1).astype(np.float32)
    label = np.zeros((d, h, w), np.uint8)
    label[:, 5:20, 4:18] = 1
    label[:, 25:45, 20:38] = 2
    label[2, 10:30, 10:14] = 3
    return image[:, None], label


VALUES = {name: [lo, (lo + hi) / 2, hi] for name, (lo, hi) in ref.RANGES.items()}


@pytest.mark.parametrize("name", ref.ALL_OPS)
def test_each_randaugment_op_equals_the_original_given_the_same_value(name):
    """Tolerance: exact (the same Pillow calls on the same 8-bit values)."""
    image, label = _stack()
    for v in VALUES[name] + [-VALUES[name][0]] * (name in ("shear_x", "translate_y")):
        ours_img, ours_lab = aug.OPS[name](image, label, v)
        ref_img, ref_lab = ref.OPS[name](*ref.original_layout(image, label, frame="none"), v)
        exp_img, exp_lab = ref.masam_layout(ref_img, ref_lab, frame="none")
        assert np.array_equal(ours_img, exp_img), (name, v)
        assert np.array_equal(ours_lab, exp_lab.astype(np.uint8)), (name, v)


def test_rot_flip_rotation_gamma_and_erasing_equal_the_original():
    image, label = _stack()
    orig = lambda: ref.original_layout(image, label, frame="none")  # noqa: E731
    cases = [
        *[(aug.rot_flip(image, label, k, a), ref.rot_flip(*orig(), k, a)) for k in range(4) for a in (0, 1)],
        *[(aug.rotate(image, label, t), ref.rotate(*orig(), t)) for t in (-15, -7, 3, 14)],
        *[(aug.gamma(image, label, g), ref.adjust_light(*orig(), g)) for g in (0.5, 1.0, 2.2, 3.49)],
    ]
    fill = np.random.default_rng(1).uniform(0, 1, size=(6, 9))
    cases.append((aug.erase(image, label, 7, 11, fill), ref.random_erasing(*orig(), 7, 11, fill)))
    for (ours_img, ours_lab), (ref_img, ref_lab) in cases:
        exp_img, exp_lab = ref.masam_layout(ref_img, ref_lab, frame="none")
        assert np.array_equal(ours_img, exp_img) and np.array_equal(ours_lab, exp_lab.astype(np.uint8))


def test_pillow_semantics_the_ops_rely_on():
    """Independent formulas for what the original gets from Pillow (8-bit, truncating)."""
    image, label = _stack()
    x8 = (image * 255).astype(np.uint8).astype(np.float64)
    out, _ = aug.brightness(image, label, 0.8)
    assert np.abs(out * 255 - np.floor(0.8 * x8 + 1e-6)).max() < 1.01
    out, _ = aug.posterize(image, label, 5.7)  # int(5.7) = 5 bits kept
    assert np.array_equal(np.round(out * 255), (x8.astype(np.uint8) & 0b11111000).astype(np.float64))
    out, _ = aug.contrast(image, label, 1.3)
    for d in range(image.shape[0]):
        mean = int(x8[d].mean() + 0.5)
        assert np.abs(out[d] * 255 - np.clip(mean + 1.3 * (x8[d] - mean), 0, 255)).max() < 1.01
    out, lab = aug.translate_x(image, label, 0.1)  # 4 of 40 columns: output column j shows input j + 4
    assert np.array_equal(lab[..., :-4], label[..., 4:]) and not lab[..., -4:].any()
    out, _ = aug.gamma(image, label, 2.0)  # x^(1/γ): brighter for γ > 1
    assert np.abs(out - np.floor(np.sqrt(x8 / 255) * 255) / 255).max() < 1e-6
    out, lab = aug.scale(image, label, 0.5)  # output (x, y) shows input (x/2, y/2): anchored top-left
    assert np.array_equal(lab[:, ::2, ::2][:, :12, :10], label[:, :12, :10])


def _replay(seed_generator_seed: int):
    """The numpy generator StackAugmenter derives from a torch generator."""
    g = torch.Generator().manual_seed(seed_generator_seed)
    return np.random.default_rng(int(torch.randint(0, 2**62, (), generator=g)))


@pytest.mark.parametrize("policy", ["original", "original-box"])
def test_whole_pipeline_equals_the_original_in_its_orientation(policy):
    """Stack turned by 180° into the original's orientation, the original's pipeline, turned back."""
    image, label = _stack(seed=3)
    augmenter = StackAugmenter(AugmentConfig(policy=policy))
    box = policy == "original-box"
    for seed in range(25):
        out_img, out_lab = augmenter(torch.from_numpy(image), torch.from_numpy(label.astype(np.int64)),
                                     torch.Generator().manual_seed(seed))  # fmt: skip
        ref_img, ref_lab = ref.pipeline(
            *ref.original_layout(image, label), _replay(seed),
            ops=ref.BOX_VARIANT_OPS if box else ref.ALL_OPS, erasing=not box,
        )  # fmt: skip
        exp_img, exp_lab = ref.masam_layout(ref_img, ref_lab)
        assert np.array_equal(out_img.numpy(), exp_img), seed
        assert np.array_equal(out_lab.numpy(), exp_lab.astype(np.int64)), seed


def test_video_frames_are_augmented_in_the_originals_frame_orientation():
    """RGB stacks: the original stored frames anti-transposed (util_script_endovis18.py:130)."""
    rng = np.random.default_rng(0)
    image = rng.random((3, 3, 24, 24)).astype(np.float32)
    label = (image[:, 0] > 0.5).astype(np.int64)
    cfg = AugmentConfig(p_rot_flip=0, p_rotate=0, p_gamma=0, p_erase=0, num_ops=1, ops=("scale",))
    out, lab = StackAugmenter(cfg)(torch.from_numpy(image), torch.from_numpy(label), torch.Generator().manual_seed(0))
    anti = lambda a: np.swapaxes(a, -1, -2)[..., ::-1, ::-1]  # noqa: E731
    r = _replay(0)
    r.random(), r.random(), r.random(), r.random(), r.choice(1, size=1, replace=False)
    value = r.uniform(0.8, 1.2)
    exp_img, exp_lab = aug.scale(
        np.ascontiguousarray(anti(image)), np.ascontiguousarray(anti(label.astype(np.uint8))), value
    )
    assert np.array_equal(out.numpy(), anti(exp_img)) and np.array_equal(lab.numpy(), anti(exp_lab))


class _Spy:
    def __init__(self, monkeypatch):
        self.calls: list[tuple] = []
        for name in ("rot_flip", "rotate", "gamma", "erase"):
            monkeypatch.setattr(aug, name, self._record(name))
        monkeypatch.setattr(aug, "OPS", {n: self._record(n) for n in aug.RAND_OPS})

    def _record(self, name):
        def op(image, label, *args):
            self.calls.append((name, *args))
            return image, label

        return op


def test_probabilities_and_ranges_over_many_draws(monkeypatch):
    spy = _Spy(monkeypatch)
    image, label = torch.zeros(5, 1, 40, 50), torch.zeros(5, 40, 50, dtype=torch.long)
    n = 4000
    augmenter = StackAugmenter()
    for seed in range(n):
        augmenter(image, label, torch.Generator().manual_seed(seed))
    by_op = Counter(c[0] for c in spy.calls)
    sigma = np.sqrt(n * 0.25)
    for name in ("rot_flip", "rotate", "gamma", "erase"):
        assert abs(by_op[name] - n / 2) < 4 * sigma, (name, by_op[name])
    rand = [c for c in spy.calls if c[0] in aug.RAND_OPS]
    assert len(rand) == 2 * n
    for name in aug.RAND_OPS:  # each op in 2 of 10 draws: p = 0.2
        assert abs(by_op[name] - 0.2 * n) < 4 * np.sqrt(n * 0.16), (name, by_op[name])
        values = np.array([c[1] for c in rand if c[0] == name])
        lo, hi = ref.RANGES[name]
        assert values.min() >= lo and values.max() < hi
        assert values.min() < lo + 0.05 * (hi - lo) and values.max() > hi - 0.05 * (hi - lo)  # the whole range
    posterize_bits = Counter(int(c[1]) for c in rand if c[0] == "posterize")
    assert set(posterize_bits) == {4, 5, 6, 7, 8}
    ks = Counter(c[1] for c in spy.calls if c[0] == "rot_flip")
    axes = Counter(c[2] for c in spy.calls if c[0] == "rot_flip")
    assert set(ks) == {0, 1, 2, 3} and set(axes) == {0, 1}
    angles = {c[1] for c in spy.calls if c[0] == "rotate"}
    assert angles == set(range(-15, 15))
    gammas = np.array([c[1] for c in spy.calls if c[0] == "gamma"])
    assert gammas.min() >= 0.5 and gammas.max() < 3.5 and abs(np.median(gammas) - 2.0) < 0.1
    erase = [c for c in spy.calls if c[0] == "erase"]
    areas = np.array([c[3].size / (40 * 50) for c in erase])
    assert areas.max() <= 0.05 and np.quantile(areas, 0.05) > 0.01  # int() of the sides trims the area
    aspects = np.array([c[3].shape[1] / c[3].shape[0] for c in erase if min(c[3].shape) > 3])
    assert aspects.min() > 0.2 and aspects.max() < 4.5 and aspects.min() < 0.5 and aspects.max() > 2.5
    fills = np.concatenate([c[3].ravel() for c in erase])
    assert fills.min() >= 0 and fills.max() < 1 and abs(fills.mean() - 0.5) < 0.01


def test_box_variant_draws_no_erasing_and_no_geometric_randaugment_op(monkeypatch):
    spy = _Spy(monkeypatch)
    augmenter = StackAugmenter(AugmentConfig(policy="original-box"))
    for seed in range(1000):
        augmenter(
            torch.zeros(5, 1, 16, 16), torch.zeros(5, 16, 16, dtype=torch.long), torch.Generator().manual_seed(seed)
        )
    by_op = Counter(c[0] for c in spy.calls)
    assert by_op["erase"] == 0 and not any(by_op[o] for o in aug.GEOMETRIC_OPS)
    assert by_op["rot_flip"] > 400 and by_op["rotate"] > 400 and by_op["gamma"] > 400
    for name in aug.BOX_OPS:  # 2 of 5: p = 0.4
        assert abs(by_op[name] - 400) < 4 * np.sqrt(1000 * 0.24)


def test_bad_configs_are_refused_in_one_line():
    with pytest.raises(ValueError, match="policy must be one of"):
        AugmentConfig(policy="light")
    with pytest.raises(ValueError, match="unknown augmentation ops"):
        AugmentConfig(ops=("shear",))
