"""Slice stacks, edge handling, label alignment under augmentation, seeding and workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from masam.data import AugmentConfig, Normalization, StackAugmenter, load_dataset, preprocess_dataset
from masam.data.augment import GEOMETRIC_OPS, RAND_OPS
from masam.data.loader import StackDataset
from masam.data.slices import stack_indices
from tests.data.helpers import make_dataset


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("stacks")
    ds = load_dataset(make_dataset(root / "D", cases=2, shape=(8, 40, 48)))
    return preprocess_dataset(ds, root / "cache", image_size=48, normalization=Normalization("CT"))


def test_stacks_hold_the_neighbouring_slices_and_their_labels(cache):
    stacks = StackDataset(cache, ["case00"], slices=5)
    image = np.load(cache / "case00_image.npy").astype(np.float32)
    label = np.load(cache / "case00_label.npy")
    for centre in (0, 1, 4, 7):
        item = stacks[centre]
        idx = stack_indices(8, centre)
        assert item["slice"] == centre and item["image"].shape == (5, 3, 48, 48)
        assert torch.equal(item["image"][:, 1], torch.from_numpy(image[idx, 0]))  # grey repeated to 3
        assert torch.equal(item["image"][:, 0], item["image"][:, 2])
        assert torch.equal(item["label"], torch.from_numpy(label[idx].astype(np.int64)))


def _only(op: str) -> AugmentConfig:
    off = dict(p_rot_flip=0.0, p_rotate=0.0, p_gamma=0.0, p_erase=0.0, num_ops=0)
    if op in ("rot_flip", "rotate", "gamma", "erase"):
        return AugmentConfig(**{**off, f"p_{op}": 1.0})
    return AugmentConfig(**{**off, "num_ops": 1, "ops": (op,)})


@pytest.mark.parametrize("op", ["rot_flip", "rotate", "gamma", "erase", *RAND_OPS])
def test_labels_stay_aligned_with_the_image_under_every_augmentation(op):
    """The image is the label map drawn in grey: after any augmentation, reading the label back
    from the image must give the augmented label (up to interpolated borders; erasing zeroes the
    labels under its noise)."""
    label = torch.zeros(5, 64, 64, dtype=torch.long)
    label[:, 10:30, 8:40] = 1
    label[:, 35:55, 30:58] = 2
    label[2, 20:40, 20:30] = 3  # one slice differs, so slices must not be mixed up
    image = (label.float() / 3)[:, None].contiguous()
    augment = StackAugmenter(_only(op))
    moved = 0
    for seed in range(4):
        out_image, out_label = augment(image, label, torch.Generator().manual_seed(seed))
        assert out_image.shape == image.shape and out_label.shape == label.shape and out_label.dtype == torch.long
        geometric = op in ("rot_flip", "rotate", *GEOMETRIC_OPS)
        if geometric:
            recovered = torch.round(out_image[:, 0] * 3).long()
            assert (recovered == out_label).float().mean() > 0.97
            moved += not torch.equal(out_label, label)
        elif op == "erase":
            erased = out_label != label
            assert erased.any() and (out_label[erased] == 0).all()
            moved += 1
        else:
            assert torch.equal(out_label, label)
            moved += not torch.allclose(out_image, image, atol=1 / 255)
    # the op did something in most draws (posterize keeps 0, 1/3, 2/3, 1 within 1/255; identity nothing)
    assert moved >= 2 or op in ("posterize", "identity")


def test_augmentation_is_identical_across_the_slices_of_a_stack():
    image = torch.rand(1, 3, 32, 32).expand(5, -1, -1, -1).contiguous()
    label = (image[:, 0] > 0.5).long()
    out, lab = StackAugmenter()(image, label, torch.Generator().manual_seed(3))
    for d in range(1, 5):
        assert torch.equal(out[d], out[0]) and torch.equal(lab[d], lab[0])


def test_stream_is_reproducible_by_seed_and_differs_between_samples_and_epochs(cache):
    def draw(seed, epoch=0, workers=0):
        ds = StackDataset(cache, slices=5, augment=StackAugmenter(), seed=seed)
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=1, num_workers=workers, shuffle=False)
        return [b["image"] for b, _ in zip(loader, range(6))]

    a, b = draw(seed=7), draw(seed=7, workers=2)
    assert all(torch.equal(x, y) for x, y in zip(a, draw(seed=7)))
    # same draws whatever the worker count (workers run 1 thread: float sums may round differently)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(a, b))
    c = draw(seed=8)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    d = draw(seed=7, epoch=1)
    assert not all(torch.equal(x, y) for x, y in zip(a, d))


def test_different_workers_draw_different_augmentations(tmp_path):
    """Every item is the same stack; with two workers each item must still get its own draw
    (the original's workers repeated one random sequence)."""
    root = tmp_path / "D"
    make_dataset(root, cases=1, shape=(1, 32, 32))
    ds = StackDataset(
        preprocess_dataset(load_dataset(root), tmp_path / "cache", 32, Normalization("CT")),
        slices=5,
        augment=StackAugmenter(),
        seed=0,
    )
    ds.index = ds.index * 8  # eight copies of the single stack
    seen = []
    for batch in DataLoader(ds, batch_size=1, num_workers=2):
        seen.append(batch["image"][0])
    assert len(seen) == 8
    distinct = {tuple(np.round(x[0, 0].numpy().ravel()[::37], 4)) for x in seen}
    assert len(distinct) >= 6
