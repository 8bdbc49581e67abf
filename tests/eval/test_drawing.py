"""Drawing slices for people (masam.eval.drawing): class colours and contours, the slices chosen, video frames."""

from __future__ import annotations

import numpy as np

from masam.eval.drawing import REFERENCE_COLOUR, choose_slices, class_colour, render_overlay
from tests.eval.test_report import NAMES, body


def test_render_overlay_colours():
    grey = np.full((20, 20), 0.5)
    ref = np.zeros((20, 20), np.uint8)
    ref[5:15, 5:15] = 1
    pred = np.zeros_like(ref)
    pred[5:15, 5:12] = 2
    rgb = render_overlay(grey, pred, ref)
    assert rgb.shape == (20, 20, 3) and rgb.dtype == np.uint8
    assert np.all(rgb[5, 8] == class_colour(2))  # the prediction's contour on top
    assert np.all(rgb[4, 14] == REFERENCE_COLOUR) and np.all(rgb[14, 14] == REFERENCE_COLOUR)  # band across the edge
    assert np.all(rgb[10, 9] == 127)  # inside: the image
    assert np.array_equal(render_overlay(grey, None), np.full((20, 20, 3), 127, np.uint8))


def test_worst_slice_per_class_and_evenly_spaced():
    _, ref, pred = body()
    chosen = dict(choose_slices(pred, ref, NAMES, evenly=3))
    assert "worst liver" in chosen[4]
    assert not any("kidney" in why for why in chosen.values())  # perfect everywhere: no worst panel
    assert [s for s, why in chosen.items() if "evenly" in why] == [2, 4, 5]  # over slices 1..6
    largest = dict(choose_slices(pred, None, NAMES, evenly=0))
    assert any("largest kidney" in why for why in largest.values())


def test_video_frames_are_drawn_as_they_are():
    from masam.data.io import Volume
    from masam.eval.drawing import volume_panels

    frames = np.zeros((4, 20, 30, 3), np.uint8)
    frames[..., 0] = 200
    labels = np.zeros((4, 20, 30), np.uint8)
    labels[:, 2:8, 3:10] = 1  # top left of every frame
    video = Volume(frames, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), None, is_video=True)
    panels = volume_panels(video, labels, None, {1: "tool"}, width=60)
    rgb, caption = panels[0]
    assert rgb.shape == (40, 60, 3) and caption.startswith("frame ")
    rows, cols = np.nonzero(np.all(rgb == class_colour(1), axis=-1))
    assert rows.max() < 20 and cols.max() < 30
    assert rgb[30, 50, 0] > 150 and rgb[30, 50, 1] < 50  # the frame's own red
