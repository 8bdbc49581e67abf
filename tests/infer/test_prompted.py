"""Prompted prediction with one model: the model behind propagation, and the boxed target redrawn
over the automatic result."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from masam.data import Volume
from masam.data.slices import prepare_image
from masam.infer import Predictor, prompted
from masam.infer.boxes import Box3D, PropagatedBox, box_region, slice_boxes
from masam.infer.prompted import merge_prompted, model_slice_predictor, model_slice_probabilities, predict_prompted
from tests.data.helpers import phantom
from tests.model.helpers import tiny_ct_model


@pytest.fixture(scope="module")
def predictor():
    return Predictor(tiny_ct_model(), batch_size=4)


@pytest.fixture(scope="module")
def volume():
    image, _ = phantom(shape=(7, 40, 48))
    return Volume(image, (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), Path("p.nii.gz"))


def test_merge_redraws_only_the_target_inside_the_region():
    automatic = np.array([[0, 1, 2, 2], [2, 2, 1, 0]])
    prompted = np.array([[2, 2, 0, 1], [0, 0, 2, 2]])
    region = np.array([[True, True, True, False], [False, True, True, True]])
    merged = merge_prompted(automatic, prompted, 2, region)
    # inside: automatic 2s cleared, prompted 2s written (over class 1 too); outside: automatic
    assert merged.tolist() == [[2, 2, 0, 2], [2, 0, 2, 2]]
    assert np.array_equal(merge_prompted(automatic, prompted == 2, 2, region), merged)


def reference_slice(predictor, volume, index, box):
    """Probabilities ``[K+1, rows, cols]`` of the centre slice of the stack around ``index`` with
    ``box`` on every slice of the stack."""
    slices, _ = prepare_image(volume, predictor.normalization, 64)
    idx = np.clip(np.arange(index - 2, index + 3), 0, slices.shape[0] - 1)
    stack = slices[idx][None].expand(-1, -1, 3, -1, -1)
    scale = torch.tensor([64 / 48, 64 / 40, 64 / 48, 64 / 40])
    boxes = (torch.tensor(box, dtype=torch.float32) * scale).expand(1, 5, 4)
    with torch.no_grad():
        probs = torch.softmax(predictor.model(stack, boxes)["logits"], dim=2)[0, 2]
    return F.interpolate(probs[None], size=(40, 48), mode="bilinear", align_corners=False)[0]


def test_the_slice_model_is_the_centre_of_one_boxed_stack(predictor, volume):
    probabilities = model_slice_probabilities(predictor, volume)
    for index, box in ((0, [5.0, 4.0, 30.0, 33.0]), (3, [10.0, 12.0, 40.0, 20.0]), (6, [0.0, 0.0, 47.0, 39.0])):
        expected = reference_slice(predictor, volume, index, box)
        # equal although only the centre slice had the box: the decoder works slice by slice
        assert torch.allclose(probabilities(index, box), expected, atol=1e-5)
        for label in (0, 1, 2):
            mask = model_slice_predictor(predictor, volume, label)(index, box)
            assert np.array_equal(mask, (expected.argmax(0) == label).numpy())
    moved = probabilities(3, [0.0, 0.0, 8.0, 8.0])
    assert (moved - probabilities(3, [10.0, 12.0, 40.0, 20.0])).abs().max() > 1e-3  # the box reaches the model


class FakePredictor:
    """Stands in for a trained model: automatically it finds class 1 shifted by 3 voxels and a
    spurious class-1 blob; given boxes, it finds class 1 exactly (anywhere: the merge must confine it)."""

    def __init__(self, truth: np.ndarray, misses: int | None = None):
        self.truth = truth
        self.misses = misses  # a class the automatic prediction never finds
        self.calls = []

    def predict(self, volume, boxes=None):
        self.calls.append(boxes)
        if boxes is None:
            labels = np.where(self.truth == 1, 0, self.truth)
            labels[np.roll(self.truth == 1, 3, axis=2) & (labels == 0)] = 1
            labels[:, :4, :4] = 1
            labels[labels == self.misses] = 0
        else:
            labels = self.truth.copy()
        return SimpleNamespace(labels=labels)

    def predict_volume(self, volume, boxes=None, points=None):  # the plain path predict_prompted calls
        return self.predict(volume, boxes)


def test_a_3d_box_refines_the_target_inside_it_and_keeps_the_automatic_result_elsewhere(volume):
    truth = phantom(shape=(7, 40, 48))[1]
    fake = FakePredictor(truth)
    zs, ys, xs = np.nonzero(truth == 1)
    prompt = Box3D((xs.min() - 4, ys.min() - 1, zs.min(), xs.max() + 4, ys.max() + 1, zs.max()))
    merged = predict_prompted(fake, volume, prompt, 1)
    boxes = fake.calls[1]
    assert fake.calls[0] is None and boxes == slice_boxes(prompt, volume, 0)
    region = box_region(boxes, truth.shape)
    automatic = fake.predict(volume).labels
    assert np.array_equal(merged[~region], automatic[~region])  # the spurious blob stays: outside
    assert (merged[:, :4, :4] == 1).all()
    assert np.array_equal(merged[region] == 1, truth[region] == 1)  # the target is the prompted one
    assert np.array_equal(merged[region & (truth == 2)], truth[region & (truth == 2)])  # class 2 kept


def test_a_propagated_box_merges_its_walk_with_the_automatic_result(volume, monkeypatch):
    truth = phantom(shape=(7, 40, 48))[1]
    fake = FakePredictor(truth, misses=2)
    monkeypatch.setattr(prompted, "model_slice_predictor", lambda p, v, label: lambda i, box: truth[i] == label)
    zs, ys, xs = np.nonzero(truth == 2)
    middle = int(np.median(zs))
    rows, cols = np.nonzero(truth[middle] == 2)
    start = PropagatedBox(middle, (cols.min(), rows.min(), cols.max(), rows.max()))
    merged = predict_prompted(fake, volume, start, 2)
    assert not (fake.predict(volume).labels == 2).any()
    assert np.array_equal(merged == 2, truth == 2)  # the walk recovered class 2 on every slice
    automatic = fake.predict(volume).labels
    assert np.array_equal(merged == 1, (automatic == 1) & (truth != 2))  # class 1: automatic (minus 2)
