"""Largest-component post-processing: it removes a stray island, agrees with MONAI, and is chosen per
class only where it raises the mean Dice."""

from __future__ import annotations

import collections
import itertools
import json

import numpy as np
import pytest

from masam.infer.postprocess import (
    PostprocessingError,
    apply_postprocessing,
    choose_postprocessing,
    keep_largest_component,
    postprocessing_gains,
    read_postprocessing,
    write_postprocessing,
)


def organ_case(seed: int, island: bool, split_organ: bool):
    """``[z, y, x]`` reference and prediction: class 1 a block (the prediction adds a stray island
    when ``island``), class 2 two separate blocks in the reference (the prediction finds both; with
    ``split_organ`` False the prediction misses the second), class 3 one block."""
    rng = np.random.default_rng(seed)
    ref = np.zeros((10, 24, 24), np.uint8)
    ref[2:7, 3:10, 3:10] = 1
    ref[2:6, 14:18, 3:7] = 2
    ref[2:6, 14:18, 12:16] = 2
    ref[6:9, 18:22, 18:22] = 3
    pred = ref.copy()
    pred[2:7, 3:10, 9] = 0  # an imperfect edge
    if island:
        z, x = rng.integers(0, 8), rng.integers(11, 15)
        pred[z : z + 2, 20:22, x : x + 2] = 1  # clear of every organ
    if not split_organ:
        pred[2:6, 14:18, 12:16] = 0
    return pred, ref


def test_a_stray_island_is_removed():
    pred, ref = organ_case(0, island=True, split_organ=True)
    out = keep_largest_component(pred, [1])
    assert (out == 1).sum() == (pred[:, :12] == 1).sum()
    assert np.array_equal(out[:, :20], pred[:, :20])  # the organ and the other classes untouched
    assert (out[:, 20:] == 1).sum() == 0 and (pred[:, 20:] == 1).sum() == 8
    assert np.array_equal(pred, organ_case(0, island=True, split_organ=True)[0])  # input not modified


def test_corner_neighbours_are_one_component():
    labels = np.zeros((3, 3, 3), np.uint8)
    labels[0, 0, 0] = labels[1, 1, 1] = 1  # touch by a corner only
    labels[2, 2, 2] = 1
    assert np.array_equal(keep_largest_component(labels, [1]), labels)


def flood_fill_reference(labels: np.ndarray, c: int) -> np.ndarray:
    """Largest 26-connected component of class ``c`` by breadth-first search, voxel by voxel."""
    seen = np.zeros(labels.shape, bool)
    steps = [d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)]
    best: list = []
    for start in zip(*np.nonzero(labels == c)):
        if seen[start]:
            continue
        seen[start] = True
        queue, component = collections.deque([start]), []
        while queue:
            v = queue.popleft()
            component.append(v)
            for d in steps:
                n = tuple(a + b for a, b in zip(v, d))
                if all(0 <= i < s for i, s in zip(n, labels.shape)) and not seen[n] and labels[n] == c:
                    seen[n] = True
                    queue.append(n)
        if len(component) > len(best):
            best = component
    out = labels.copy()
    out[labels == c] = 0
    for v in best:
        out[v] = c
    return out


@pytest.mark.parametrize("seed", range(3))
def test_agrees_with_a_flood_fill(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random((6, 16, 16)) < 0.1).astype(np.uint8) * rng.integers(1, 3, (6, 16, 16)).astype(np.uint8)
    ours = keep_largest_component(labels, [2])
    assert np.array_equal(ours, flood_fill_reference(labels, 2))
    assert (labels == 2).sum() > (ours == 2).sum()  # something was removed


def test_chosen_only_where_it_raises_the_mean_dice(tmp_path):
    cases = [organ_case(s, island=s != 1, split_organ=True) for s in range(4)]
    preds, refs = [c[0] for c in cases], [c[1] for c in cases]
    gains = postprocessing_gains(preds, refs, [1, 2, 3])
    assert gains[1]["after"] > gains[1]["before"]  # the islands cost Dice
    assert gains[2]["after"] < gains[2]["before"]  # the organ really has two parts
    assert gains[3]["after"] == gains[3]["before"] == 1.0  # nothing to remove: not kept
    decision = choose_postprocessing(preds, refs, [1, 2, 3])
    assert decision == {1: True, 2: False, 3: False}
    path = write_postprocessing(tmp_path / "postprocessing.json", decision, gains)
    assert json.loads(path.read_text())["keep_largest_component"] == {"1": True, "2": False, "3": False}
    stored = read_postprocessing(path)
    assert stored == decision
    out = apply_postprocessing(preds[0], stored)
    assert np.array_equal(out, keep_largest_component(preds[0], [1]))
    assert (out == 2).sum() == (preds[0] == 2).sum()


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(PostprocessingError, match="as many predictions"):
        choose_postprocessing([np.zeros((2, 2, 2))], [], [1])
    with pytest.raises(PostprocessingError, match="shape"):
        choose_postprocessing([np.zeros((2, 2, 2))], [np.zeros((2, 2, 3))], [1])
    bad = tmp_path / "postprocessing.json"
    bad.write_text('{"1": true}')
    with pytest.raises(PostprocessingError, match="postprocessing.json: expected"):
        read_postprocessing(bad)
    with pytest.raises(PostprocessingError, match="cannot read"):
        read_postprocessing(tmp_path / "missing.json")
