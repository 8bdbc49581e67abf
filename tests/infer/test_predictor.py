"""Whole-volume prediction: the paper's aggregation, geometry of the outputs, box prompts, folders."""

from __future__ import annotations

import json

import matplotlib.image as plt_image
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import masam
from masam.cli import main
from masam.data import Normalization, read_volume
from masam.infer import Predictor, stack_centres
from masam.infer.predict_files import boxes_from_labels, predict_inputs
from tests.conftest import SHARED, require_shared
from tests.data.helpers import make_video_dataset, phantom, write_volume
from tests.model.helpers import tiny_ct_model


@pytest.fixture(scope="module")
def model():
    return tiny_ct_model()


def original_loop(model, slices, classes):
    """The original test script's loop, literally: one 5-slice stack per slice (ends repeated),
    probabilities accumulated into an array padded by 2 at each end with a counter starting at 1,
    padding dropped, argmax."""
    n = slices.shape[0]
    probability = np.zeros((n + 4, classes + 1, *slices.shape[-2:]), np.float32)
    avg_cnt = np.ones_like(probability)
    for ind in range(n):
        idx = [min(max(i, 0), n - 1) for i in range(ind - 2, ind + 3)]
        stack = slices[idx][None].expand(-1, -1, 3, -1, -1)
        with torch.no_grad():
            out = torch.softmax(model(stack)["logits"], dim=2)[0].numpy()
        probability[ind : ind + 5] += out
        avg_cnt[ind : ind + 5] += 1.0
    probability = probability / avg_cnt
    return probability[2:-2], avg_cnt[2:-2]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_aggregation_equals_the_original_test_loop(model, batch_size):
    slices = torch.rand(7, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    predictor = Predictor(model, batch_size=batch_size)
    ours = dict(predictor.slice_probabilities(slices))
    assert sorted(ours) == list(range(7))
    theirs, counter = original_loop(model, slices, classes=2)
    ours_stack = torch.stack([ours[i] for i in range(7)]).numpy()
    # the original divides by (covering stacks + 1): a per-slice scale that leaves the argmax alone
    assert np.allclose(ours_stack * (counter - 1) / counter, theirs, atol=1e-6)
    assert np.array_equal(ours_stack.argmax(1), theirs.argmax(1))


def test_stride_still_covers_every_slice(model):
    assert stack_centres(10, 1) == list(range(10))
    assert stack_centres(10, 3) == [2, 5, 7]
    assert stack_centres(11, 5) == [2, 7, 8]
    assert stack_centres(10, 5) == [2, 7]
    assert stack_centres(3, 5) == [2] and stack_centres(1, 5) == [0]
    for n in range(1, 40):
        for stride in range(2, 6):
            centres = stack_centres(n, stride)
            covered = {c + o for c in centres for o in range(-2, 3)}
            assert set(range(n)) <= covered, (n, stride)
            if n >= 5:  # every stack lies inside the volume
                assert min(centres) >= 2 and max(centres) <= n - 3, (n, stride)
            assert len(centres) == max(1, -(-(n - 5) // stride) + 1), (n, stride)
    slices = torch.rand(11, 1, 64, 64)
    out = dict(Predictor(model, stride=4).slice_probabilities(slices))
    assert sorted(out) == list(range(11))
    assert all(torch.allclose(p.sum(0), torch.ones(64, 64), atol=1e-5) for p in out.values())


def _assert_same_geometry(written, source):
    a, b = sitk.ReadImage(str(written)), sitk.ReadImage(str(source))
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)


@pytest.mark.parametrize(
    "relative", ["totalsegmentator/example_ct.nii.gz", "pyradiomics/brain1_image.nrrd"], ids=["ct", "nrrd"]
)
def test_predictions_keep_the_input_geometry(model, relative, tmp_path):
    source = require_shared(SHARED / "data" / relative)
    report = predict_inputs(Predictor(model, batch_size=4), source, tmp_path, save_probabilities=True, overlays=True)
    assert not report.failed and len(report.written) == 1
    written = report.written[0]
    assert written.name == source.name  # same name and format as the input
    _assert_same_geometry(written, source)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(written)))
    assert labels.dtype == np.uint8 and labels.max() <= 2
    probs = np.load(tmp_path / f"{written.name.split('.')[0]}_probabilities.npz")
    assert probs["probabilities"].dtype == np.float16 and probs["probabilities"].shape == (3, *labels.shape)
    # float16 storage may turn a near-tie the other way on a few voxels
    assert (probs["probabilities"].astype(np.float32).argmax(0) == labels).mean() > 0.999
    # overlays are the report's drawings (eval/drawing.py): the largest slice per class and 3 evenly spaced
    drawings = sorted((tmp_path / "overlays").glob("*.png"))
    assert 3 <= len(drawings) <= 3 + 2 and all(plt_image.imread(p).shape[2] in (3, 4) for p in drawings)


def test_video_folder_prediction(model, tmp_path):
    make_video_dataset(tmp_path / "V", sequences=1, frames=4)
    predictor = Predictor(model, Normalization("RGB"))
    report = predict_inputs(predictor, tmp_path / "V" / "imagesTr" / "seq0", tmp_path / "out")
    assert not report.failed
    frames = sorted((tmp_path / "out" / "seq0").glob("*.png"))
    assert len(frames) == 4
    assert read_volume(tmp_path / "out" / "seq0").array.shape == (4, 32, 40, 3)  # frame size kept


def test_python_api_on_an_array_and_box_prompts_change_the_output(model):
    image, label = phantom((6, 40, 48), seed=3)
    predictor = Predictor(model)
    plain = predictor.predict(image, spacing=(1.0, 1.0, 3.0), return_probabilities=True)
    assert plain.labels.shape == image.shape and plain.probabilities.shape == (3, *image.shape)
    boxes = boxes_from_labels(label, axis=0)
    assert boxes and all(len(b) == 4 for b in boxes.values())
    boxed = predictor.predict(image, spacing=(1.0, 1.0, 3.0), boxes=boxes, return_probabilities=True)
    moved = predictor.predict(
        image, spacing=(1.0, 1.0, 3.0), boxes={k: [0, 0, 5, 5] for k in boxes}, return_probabilities=True
    )
    assert not np.allclose(boxed.probabilities, plain.probabilities, atol=1e-3)
    assert not np.allclose(boxed.probabilities, moved.probabilities, atol=1e-3)


def test_predict_command_keeps_going_past_a_bad_case(model, tmp_path, capsys):
    weights = tmp_path / "model.safetensors"
    masam.save_weights(model, weights)
    inputs = tmp_path / "in"
    inputs.mkdir()
    image, _ = phantom((5, 30, 30), seed=1)
    write_volume(inputs / "good_0000.nii.gz", image, (1.0, 1.0, 2.0))
    (inputs / "bad_0000.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"good": {"2": [3, 4, 20, 25]}}))
    code = main(
        [
            "predict",
            "-m",
            str(weights),
            "-i",
            str(inputs),
            "-o",
            str(tmp_path / "out"),
            "--quiet",
            "--boxes",
            str(boxes),
        ]
    )
    assert code == 1
    assert (tmp_path / "out" / "good.nii.gz").is_file() and not (tmp_path / "out" / "bad.nii.gz").exists()
    err = capsys.readouterr().err
    assert "failed: bad:" in err and "bad_0000.nii.gz" in err
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".tmp")]
    boxes.write_text(json.dumps({"good": {"2": [3, 4, 40, 25]}}))
    assert (
        main(
            [
                "predict",
                "-m",
                str(weights),
                "-i",
                str(inputs / "good_0000.nii.gz"),
                "-o",
                str(tmp_path / "o2"),
                "--quiet",
                "--boxes",
                str(boxes),
            ]
        )
        == 1
    )
    assert "outside the 30x30 slice" in capsys.readouterr().err


def test_fast_mode_tiles_the_volume_with_a_fifth_of_the_stacks(model, tmp_path):
    from masam.infer.predictor import PREDICTION_MODES

    assert len(stack_centres(150, PREDICTION_MODES["fast"])) == 30
    assert len(stack_centres(150, PREDICTION_MODES["faithful"])) == 150
    calls = []
    forward = model.forward

    def counting(x, boxes=None):
        calls.append(x.shape[0])
        return forward(x, boxes)

    model.forward = counting
    try:
        weights = tmp_path / "m.safetensors"
        masam.save_weights(model, weights)
        image = write_volume(tmp_path / "v_0000.nii.gz", phantom((20, 30, 30), seed=2)[0], (1.0, 1.0, 2.0))
        predictor = Predictor(model, stride=PREDICTION_MODES["fast"], batch_size=1)
        result = predictor.predict(image)
        assert sum(calls) == len(stack_centres(20, 5)) == 4
        assert result.labels.shape == (20, 30, 30)
    finally:
        model.forward = forward
    assert (
        main(["predict", "-m", str(weights), "-i", str(image), "-o", str(tmp_path / "o"), "--mode", "fast", "--quiet"])
        == 0
    )
    assert read_volume(tmp_path / "o" / "v.nii.gz").array.shape == (20, 30, 30)


def test_points_refine_their_slice_as_the_replayed_rounds_of_every_covering_stack(model):
    """Issue 22: a click prompts its own slice: there, the probabilities are the mean over the five
    stacks holding the slice of its decoding with the points replayed (round 1: the first point,
    round 2: both, with round 1's prediction as the mask prompt); every other slice is automatic."""
    from masam.data.slices import prepare_image
    from masam.model.correction import mask_prompt
    from tests.model.test_correction import alone

    image, _ = phantom(shape=(7, 40, 48))
    volume = masam.data.Volume(image, (1.0, 1.0, 3.0), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1), "p.nii.gz")
    model.metadata = {**model.metadata, "click_rounds": 3}
    try:
        predictor = Predictor(model, batch_size=3)
        clicks = [[20, 18, 3, 1], [30, 25, 3, 0]]
        got = predictor.predict(volume, points=clicks, return_probabilities=True).probabilities
        automatic = predictor.predict(volume, return_probabilities=True).probabilities
    finally:
        model.metadata.pop("click_rounds")
    slices, _ = prepare_image(volume, predictor.normalization, 64)
    pixels = torch.tensor([[(x + 0.5) * 64 / 48 - 0.5, (y + 0.5) * 64 / 40 - 0.5, label] for x, y, _, label in clicks])
    size = model.prompt_encoder.mask_input_size
    total = 0
    with torch.no_grad():
        for centre in range(1, 6):
            idx = np.clip(np.arange(centre - 2, centre + 3), 0, 6)
            embedding = model.encode(slices[idx][None].expand(-1, -1, 3, -1, -1).float())[3 - centre + 2]
            first = alone(model, embedding, None, pixels[:1])
            second = alone(model, embedding, None, pixels, mask_prompt(first[None], None, size)[0])
            total = total + torch.softmax(second, 0)
    expected = torch.nn.functional.interpolate((total / 5)[None], size=(40, 48), mode="bilinear")[0]
    assert np.allclose(got[:, 3].astype(np.float32), expected.numpy(), atol=2e-3)
    others = [0, 1, 2, 4, 5, 6]
    assert np.array_equal(got[:, others], automatic[:, others])
    assert np.abs(got[:, 3].astype(np.float32) - automatic[:, 3]).max() > 1e-3  # the clicks changed it
