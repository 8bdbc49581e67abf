"""The interactive session (issue 22): what ``Predictor.predict`` (``masam predict``) gives for the
same prompts, voxel for voxel, without running the image encoder for a click; undo, objects,
the background encoding and the saved file's geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from masam.data import Volume, read_volume
from masam.infer import Predictor
from masam.infer.boxes import Box3D
from masam.interactive.session import Session
from tests.data.helpers import phantom
from tests.infer.test_boxes import rotation_z
from tests.model.helpers import tiny_ct_model

SHAPE = (7, 40, 48)


@pytest.fixture(scope="module")
def volume():
    image, _ = phantom(shape=SHAPE)
    direction = tuple(rotation_z(30).ravel())
    return Volume(image, (1.1, 0.9, 3.0), (-12.0, 40.0, 7.5), direction, Path("p.nii.gz"))


def predictor_with(**metadata) -> Predictor:
    """The tiny random model with its mask logits and point tokens scaled up, so that clicks
    change the label map (the plain random model's classes are all near 1/3)."""
    model = tiny_ct_model()
    model.metadata = {**model.metadata, **metadata}
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(100)
        for token in model.prompt_encoder.point_embeddings[:2]:
            token.weight.mul_(30)
    return Predictor(model, batch_size=2)


CLICK_MODEL = {"prompt": "box+points", "box_label": 2, "prompt_dropout": 0.5, "click_rounds": 3}
CLICKS = [[20, 18, 3, 1], [30, 25, 3, 0], [12, 30, 5, 1], [22, 20, 3, 1]]


@pytest.mark.parametrize(
    "metadata, stride", [(CLICK_MODEL, 1), ({"prompt": "points", "box_label": 2}, 1), (CLICK_MODEL, 5)]
)
def test_the_sessions_result_is_the_predictors_for_the_same_prompts(volume, metadata, stride):
    predictor = predictor_with(**metadata)
    predictor.stride = stride  # 5: the fast mode, stacks tiling the volume
    box = (8, 6, 2, 40, 34, 4)
    expected = predictor.predict(volume, boxes=Box3D(box), points=CLICKS).labels
    assert (expected != predictor.predict(volume, boxes=Box3D(box)).labels).sum() > 30  # the clicks matter
    session = Session(predictor)
    session.set_image(volume, focus=3, background=False)
    session.add_box(box)
    for click in CLICKS:  # one click at a time: one correction round each
        session.add_points([click])
    assert np.array_equal(session.result(), expected)
    points_only = Session(predictor)
    points_only.set_image(volume)
    points_only.add_points(CLICKS[:2])
    points_only.add_points(CLICKS[2:])
    assert np.array_equal(points_only.result(), predictor.predict(volume, points=CLICKS).labels)


def test_a_propagated_box_is_the_predictors(volume):
    from masam.infer.boxes import PropagatedBox

    predictor = predictor_with(**CLICK_MODEL)
    expected = predictor.predict(volume, boxes=PropagatedBox(3, (8, 6, 40, 34))).labels
    session = Session(predictor)
    session.set_image(volume, background=False)
    session.propagate(3, [8, 6, 40, 34])
    assert np.array_equal(session.result(), expected) and (expected == 2).any()


def test_a_click_runs_no_image_encoder_and_undo_restores(volume, monkeypatch):
    predictor = predictor_with(**CLICK_MODEL)
    session = Session(predictor)
    session.set_image(volume, background=False)
    calls = []
    encoder = predictor.model.image_encoder
    monkeypatch.setattr(encoder, "forward", lambda *a, **k: calls.append(1))
    first = session.add_points([[20, 18, 3, 1]])
    before = session.result().copy()
    change = session.add_points([[30, 25, 3, 0], [12, 30, 4, 1]])
    assert calls == [] and first.slices == (3,) and change.slices == (3, 4)
    after = session.result()
    if change.bounds is not None:  # every changed voxel lies inside the bounds returned
        low, high = change.bounds
        outside = np.ones(after.shape, bool)
        outside[tuple(slice(a, b + 1) for a, b in zip(low, high, strict=True))] = False
        assert np.array_equal(after[outside], before[outside]) and not np.array_equal(after, before)
    session.undo()
    assert np.array_equal(session.result(), before)
    session.undo()
    session.add_points([[20, 18, 3, 1]])
    assert np.array_equal(session.result(), before)  # the same click again gives the same
    assert calls == []


def test_objects_are_kept_apart_and_reset_forgets_one(volume):
    predictor = predictor_with(**CLICK_MODEL)
    session = Session(predictor)
    session.set_image(volume, background=False)
    automatic = session.result().copy()
    session.add_box([8, 6, 40, 34], slice=2, object=2)
    session.add_box([8, 6, 40, 34], slice=2, object=3)
    both = session.result()
    # object 3 is drawn last with the same box: where the model finds the target, 3 wins
    inside = np.zeros(SHAPE[1:], bool)
    inside[6:35, 8:41] = True  # the box's rows 6..34, columns 8..40
    target = session.objects[3][2].target & inside
    assert target.any() and (both[2][target] == 3).all()
    assert np.array_equal(both[2][~inside], automatic[2][~inside])
    session.reset(object=3)
    only_2 = session.result()
    assert not (only_2 == 3).any()
    session.undo()
    assert np.array_equal(session.result(), both)
    session.reset()
    assert np.array_equal(session.result(), automatic)


def test_the_stacks_around_the_focus_come_first_and_the_rest_in_the_background(volume):
    predictor = predictor_with(**CLICK_MODEL)
    session = Session(predictor)
    seen = []
    session.on_progress = lambda done, total: seen.append((done, total))
    session.set_image(volume, focus=6)
    encoded_first = set(session._embeddings)
    assert {4, 5, 6} <= encoded_first  # the stacks that hold slice 6
    session.wait()
    assert session.progress == (7, 7) and seen[-1] == (7, 7)
    session.cancel()


def test_the_saved_file_keeps_the_inputs_geometry(volume, tmp_path):
    session = Session(predictor_with(**CLICK_MODEL))
    session.set_image(volume, background=False)
    session.add_points([[20, 18, 3, 1]])
    written = session.save(tmp_path / "case.nii.gz")
    back = read_volume(written)
    assert np.array_equal(back.array, session.result())
    assert np.allclose(back.spacing, volume.spacing) and np.allclose(back.origin, volume.origin)
    assert np.allclose(back.direction, volume.direction, atol=1e-6)


def test_world_clicks_and_bad_clicks(volume):
    session = Session(predictor_with(**CLICK_MODEL))
    session.set_image(volume, background=False)
    from masam.infer.boxes import continuous_index

    d = np.asarray(volume.direction).reshape(3, 3)
    world = np.asarray(volume.origin) + d @ (np.asarray(volume.spacing) * np.array([20.0, 18.0, 3.0]))
    assert np.allclose(continuous_index(volume, world[None])[0], [20, 18, 3])
    session.add_points([[*world, 1]], space="world")
    by_world = session.result().copy()
    session.undo()
    session.add_points([[20, 18, 3, 1]])
    assert np.array_equal(session.result(), by_world)
    with pytest.raises(Exception, match="session: point 1 .* lies outside the image"):
        session.add_points([[20, 18, 9, 1]])
    assert torch.is_tensor(session._embeddings[0])


def test_the_starting_map_is_the_automatic_prediction_or_empty(volume):
    predictor = predictor_with(**CLICK_MODEL)
    with torch.no_grad():  # the background's hypernetwork near the lesion's: the automatic map holds the lesion
        background, lesion = (predictor.model.mask_decoder.output_hypernetworks_mlps[c].layers[-1] for c in (0, 2))
        background.weight.copy_(lesion.weight + 0.3 * torch.randn_like(lesion.weight))
        background.bias.copy_(lesion.bias)
    automatic = Session(predictor)
    automatic.set_image(volume, background=False)
    expected = predictor.predict(volume).labels
    assert (expected == 2).any() and np.array_equal(automatic.result(), expected)
    empty = Session(predictor, base="empty")
    empty.set_image(volume, background=False)
    assert not empty.result().any()
    box_only = predictor_with(prompt="box", box_label=2)
    with pytest.raises(Exception, match="base='automatic' needs a model trained to segment unprompted"):
        Session(box_only, base="automatic")
    assert Session(box_only).base == "empty"
