"""The original MA-SAM's input convention (orientation, per-stack normalisation, cubic zoom) against a
literal re-implementation of its code (tests/infer/reference_original.py)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from masam.data import convention as conv
from tests.infer import reference_original as ref
from tests.infer.test_original import _write


def test_original_orientation_is_simpleitk_turned_by_180_degrees(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1000, (6, 9, 11)).astype(np.int16)  # [z, y, x], all sides different
    nib_array = ref.read_nifti_like_nibabel(_write(tmp_path / "v.nii.gz", array))
    assert nib_array.shape == (11, 9, 6)
    stacks = ref.five_slice_stacks(nib_array)  # [y, x, 5] each, the original's orientation
    for centre, stack in enumerate(stacks):
        idx = np.clip(np.arange(centre - 2, centre + 3), 0, 5)
        assert np.array_equal(np.moveaxis(stack, -1, 0), conv.to_original_orientation(array[idx]))
    turned = conv.to_original_orientation(array)
    assert np.array_equal(conv.from_original_orientation(turned), array)
    frames = rng.random((2, 7, 10))  # Pillow [y, x]: util_script_endovis18.py:130 on a frame stack
    stored = np.flip(np.rot90(np.moveaxis(frames, 0, -1), k=1, axes=(0, 1)), axis=1)
    assert np.array_equal(np.moveaxis(stored, -1, 0), conv.frames_to_original_orientation(frames))


def test_stacks_match_the_originals_normalisation(tmp_path):
    rng = np.random.default_rng(1)
    array = rng.normal(0, 300, (7, 16, 16)).astype(np.int16)
    array[3] = 40  # one flat slice: min-max is per stack, not per slice
    ours = conv.prepare_original(array, 16)
    stacks = ref.five_slice_stacks(ref.read_nifti_like_nibabel(_write(tmp_path / "v.nii.gz", array)))
    expected = np.stack([np.moveaxis(ref.normalise(s), -1, 0) for s in stacks])
    assert ours.dtype == np.float32 and np.array_equal(ours, expected)
    assert all(abs(s.min()) < 1e-6 and abs(s.max() - 1) < 1e-6 for s in ours)


def test_cubic_resizing_both_ways_is_the_originals_zoom():
    rng = np.random.default_rng(2)
    stack = rng.random((5, 20, 24)).astype(np.float32)
    ours = conv.zoom_stack(stack, 32)
    expected = ndimage.zoom(np.moveaxis(stack, 0, -1), (32 / 20, 32 / 24, 1.0), order=3)  # dataset.py:337
    assert ours.shape == (5, 32, 32) and np.abs(ours - np.moveaxis(expected, -1, 0)).max() < 1e-5
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(5, 3, 32, 32))), 1).numpy()
    back = conv.restore_original(probs, (20, 24))
    literal = ndimage.zoom(np.moveaxis(probs, 1, -1), (1.0, 20 / 32, 24 / 32, 1.0), order=3)  # test.py:60
    assert back.shape == (5, 3, 20, 24)
    assert np.array_equal(back, conv.from_original_orientation(np.moveaxis(literal, -1, 1)))
