"""Box prompts: the three forms from JSON and CSV, 3D boxes in voxel and world coordinates on an
oblique image, boxes outside the image, and propagation of a box on one slice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from masam.data.io import Volume, slice_axis
from masam.infer.boxes import (
    Box3D,
    BoxError,
    PropagatedBox,
    SliceBoxes,
    box_region,
    parse_boxes,
    parse_boxes_csv,
    propagate_from_slice,
    read_boxes_file,
    slice_boxes,
)
from masam.infer.predict_files import boxes_from_labels


def rotation_z(degrees: float) -> np.ndarray:
    a = np.radians(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def oblique_volume(size_xyz=(20, 9, 16), spacing=(0.8, 2.5, 1.1)) -> Volume:
    """An image rotated 30 degrees about z whose largest spacing (the slice axis) is y: numpy axis 1."""
    direction = tuple(rotation_z(30).ravel())
    array = np.zeros(size_xyz[::-1], np.int16)
    return Volume(array, spacing, (-12.0, 40.0, 7.5), direction, Path("oblique.nii.gz"))


def physical(volume: Volume, index) -> np.ndarray:
    """Index (x, y, z) to mm, written out: origin + direction @ (spacing * index) (no SimpleITK)."""
    d = np.asarray(volume.direction).reshape(3, 3)
    return np.asarray(volume.origin) + d @ (np.asarray(volume.spacing) * np.asarray(index, float))


def cuboid_labels(volume: Volume, low, high) -> np.ndarray:
    """A label map ``[z, y, x]`` with 1 on the voxels of index box low..high (x, y, z, inclusive)."""
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[low[2] : high[2] + 1, low[1] : high[1] + 1, low[0] : high[0] + 1] = 1
    return labels


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_voxel_box_gives_the_boxes_of_its_cuboid_in_the_predictors_frame(axis):
    # The reference frame is today's boxes_from_labels (what the predictor has always taken).
    volume = oblique_volume()
    low, high = (3, 2, 5), (11, 6, 9)
    expected = boxes_from_labels(cuboid_labels(volume, low, high), axis)
    got = slice_boxes(Box3D((*low, *high), "voxel"), volume, axis)
    assert got == expected
    assert len(got) == high[2 - axis] - low[2 - axis] + 1  # one box per slice inside, none outside


def test_world_and_voxel_boxes_of_the_same_region_agree_on_an_oblique_image():
    volume = oblique_volume()
    axis = slice_axis(volume)
    assert axis == 1  # slices are not along the last numpy axis
    low, high = np.array([2, 1, 3]), np.array([12, 4, 12])
    voxel = slice_boxes(Box3D((*low, *high), "voxel"), volume, axis)
    corners = [physical(volume, low), physical(volume, high)]
    # read as a world-axis-aligned box, the same two corners would cover other voxels: the box is
    # aligned with the image's axes, not the world's
    aligned = np.array([[corners[i][k] for k, i in enumerate(bits)] for bits in np.ndindex(2, 2, 2)])
    to_index = np.linalg.inv(np.asarray(volume.direction).reshape(3, 3) * np.asarray(volume.spacing))
    spans = (aligned - volume.origin) @ to_index.T
    assert np.abs(np.concatenate([spans.min(0) - low, spans.max(0) - high])).max() > 0.5
    for a, b in (corners, corners[::-1]):  # either pair of opposite corners
        assert slice_boxes(Box3D((*a, *b), "world"), volume, axis) == voxel
    # corners on the outer faces of the voxels (as a viewer draws them) cover the same voxels
    faces = [physical(volume, low - 0.49), physical(volume, high + 0.49)]
    assert slice_boxes(Box3D((*faces[0], *faces[1]), "world"), volume, axis) == voxel
    assert voxel == boxes_from_labels(cuboid_labels(volume, low, high), axis)


def test_a_whole_image_world_box_is_inside_and_one_voxel_more_is_outside():
    volume = oblique_volume()
    size = np.array([20, 9, 16])
    whole = Box3D((*physical(volume, [-0.5] * 3), *physical(volume, size - 0.5)), "world")
    boxes = slice_boxes(whole, volume, 1)
    assert sorted(boxes) == list(range(9)) and boxes[0] == [0.0, 0.0, 19.0, 15.0]
    beyond = Box3D((*physical(volume, [0, 0, 0]), *physical(volume, size + [0.5, 0, 0])), "world")
    with pytest.raises(BoxError, match="outside the image"):
        slice_boxes(beyond, volume, 1, where="boxes.json: case 'a'")


@pytest.mark.parametrize(
    "prompt, message",
    [
        (Box3D((0, 0, 0, 20, 8, 15), "voxel"), "outside the image"),  # x high = size
        (Box3D((-1, 0, 0, 5, 5, 5), "voxel"), "outside the image"),
        (SliceBoxes({9: (0, 0, 3, 3)}), "the image has 9 slices"),
        (SliceBoxes({2: (0, 0, 20, 3)}), r"outside the 20x16 slice"),
        (PropagatedBox(3, (0, 0, 3, 16)), r"outside the 20x16 slice"),
    ],
)
def test_boxes_outside_the_image_are_refused_with_the_file_named(prompt, message):
    with pytest.raises(BoxError, match=message) as err:
        slice_boxes(prompt, oblique_volume(), 1, where="my_boxes.json: case 'liver_1'")
    assert str(err.value).startswith("my_boxes.json: case 'liver_1'")


def test_a_world_box_between_voxel_centres_is_refused():
    volume = oblique_volume()
    a, b = physical(volume, [3.1, 2, 2]), physical(volume, [3.4, 4, 4])
    with pytest.raises(BoxError, match="covers no voxel centre"):
        slice_boxes(Box3D((*a, *b), "world"), volume, 1)


JSON_FORMS = {
    "slices": {"4": [1, 2, 8, 9], "5": [1.5, 2, 8, 9.5]},
    "cube": {"box": [1, 2, 3, 10, 11, 12], "space": "voxel"},
    "mm": {"box": [-10.5, 20, 3, 14, 30.25, 9], "space": "world"},
    "default_space": {"box": [0, 0, 0, 1, 1, 1]},
    "grow": {"slice": 7, "box": [3, 4, 10, 12], "propagate": True},
    "single": {"slice": 2, "box": [3, 4, 10, 12]},
}
CSV_TEXT = """case,slice,x0,y0,x1,y1,propagate,z0,z1,space
slices,4,1,2,8,9,,,,
slices,5,1.5,2,8,9.5,,,,
cube,,1,2,10,11,,3,12,voxel
mm,,-10.5,20,14,30.25,,3,9,world
default_space,,0,0,1,1,,0,1,
grow,7,3,4,10,12,true,,,
single,2,3,4,10,12,,,,
"""


def test_csv_and_json_give_the_same_prompts(tmp_path):
    from_json = parse_boxes(JSON_FORMS)
    assert from_json == {
        "slices": SliceBoxes({4: (1, 2, 8, 9), 5: (1.5, 2, 8, 9.5)}),
        "cube": Box3D((1, 2, 3, 10, 11, 12), "voxel"),
        "mm": Box3D((-10.5, 20, 3, 14, 30.25, 9), "world"),
        "default_space": Box3D((0, 0, 0, 1, 1, 1), "voxel"),
        "grow": PropagatedBox(7, (3, 4, 10, 12)),
        "single": SliceBoxes({2: (3, 4, 10, 12)}),
    }
    (tmp_path / "b.json").write_text(json.dumps(JSON_FORMS))
    (tmp_path / "b.csv").write_text(CSV_TEXT)
    assert read_boxes_file(tmp_path / "b.json") == from_json
    assert read_boxes_file(tmp_path / "b.csv") == from_json
    # the two one-form headers, columns in any order
    only_3d = "space,case,x0,y0,z0,x1,y1,z1\nworld,mm,-10.5,20,3,14,30.25,9\n"
    only_slices = "case,slice,x0,y0,x1,y1\nslices,5,1.5,2,8,9.5\nslices,4,1,2,8,9\n"
    assert parse_boxes_csv(only_3d) == {"mm": from_json["mm"]}
    assert parse_boxes_csv(only_slices) == {"slices": from_json["slices"]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("slices,4,1,2,8,9\n", "header"),
        ("case,slice,x0,y0,x1,y1\na,4,1,2,8\n", "row 2"),
        ("case,slice,x0,y0,x1,y1\na,4,1,2,8,9\na,4,1,2,8,9\n", "row 3: case 'a' has a second box on slice 4"),
        ("case,slice,x0,y0,x1,y1\na,4,9,2,8,9\n", "row 2, case 'a': box .* low corner above its high corner"),
        ("case,slice,x0,y0,x1,y1,propagate\na,4,1,2,8,9,maybe\n", "row 2: propagate must be true or false"),
        ("case,slice,x0,y0,z0,x1,y1,z1\na,4,1,2,3,8,9,5\n", "row 2: give either"),
        ("case,x0,y0,z0,x1,y1,z1\na,1,2,3,8,9,5\na,1,2,3,8,9,5\n", "row 3: case 'a' already has a prompt"),
        ("case,x0,y0,z0,x1,y1,z1,space\na,1,2,3,8,9,5,mm\n", "row 2, case 'a': 'space' must be"),
    ],
)
def test_bad_csv_rows_are_named(tmp_path, text, message):
    path = tmp_path / "boxes.csv"
    path.write_text(text)
    with pytest.raises(BoxError, match=message) as err:
        read_boxes_file(path)
    assert str(err.value).startswith(str(path))


@pytest.mark.parametrize(
    "obj, message",
    [
        ([1, 2], "expected an object"),
        ({"a": {"box": [1, 2, 3, 4, 5]}}, "case 'a': expected 6 numbers"),
        ({"a": {"box": [1, 2, 3, 4, 5, float("nan")]}}, "finite"),
        ({"a": {"x": [1, 2, 3, 4]}}, "slice index 'x' is not an integer"),
        ({"a": {"-1": [1, 2, 3, 4]}}, "non-negative"),
        ({"a": {"box": [1, 2, 3, 4, 5, 6], "colour": "red"}}, "unknown keys"),
        ({"a": {"slice": 2, "box": [1, 2, 3, 4], "propagate": "yes"}}, "'propagate' must be true or false"),
        ({"a": {"box": [5, 2, 3, 4, 5, 6]}}, "low corner above"),
    ],
)
def test_bad_json_prompts_are_named(tmp_path, obj, message):
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(BoxError, match=message):
        read_boxes_file(path)


def test_unreadable_files_are_one_line_errors(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(BoxError, match=r"broken.json: not valid JSON"):
        read_boxes_file(tmp_path / "broken.json")
    with pytest.raises(BoxError, match="missing.csv: cannot read boxes"):
        read_boxes_file(tmp_path / "missing.csv")


def lesion_volume(n=30, size=48, first=9, last=17, drift=1.0) -> np.ndarray:
    """A lesion ``[n, size, size]`` (bool) on slices first..last whose radius swells and shrinks
    and whose centre drifts ``drift`` pixels per slice; plus a second blob far away on the same
    slices that a box-free predictor would also find."""
    z, y, x = np.mgrid[:n, :size, :size]
    middle = (first + last) / 2
    radius = 2 + 5 * np.sqrt(np.clip(1 - ((z - middle) / ((last - first) / 2 + 0.5)) ** 2, 0, None))
    cy, cx = 18 + drift * (z - first), 16 + 0.5 * drift * (z - first)
    lesion = ((y - cy) ** 2 + (x - cx) ** 2 <= radius**2) & (z >= first) & (z <= last)
    other = ((y - 40) ** 2 + (x - 40) ** 2 <= 9) & (z >= first - 3) & (z <= last + 3)
    return lesion, other


def test_propagation_from_one_slice_stops_at_the_lesions_end_and_recovers_it():
    lesion, other = lesion_volume()
    calls = []

    def predict_slice(index, box):
        # a perfect model: the structures on this slice that touch the box
        calls.append(index)
        region = box_region({0: box}, (1, *lesion.shape[1:]))[0]
        return (lesion[index] | other[index]) if (lesion[index] & region).any() else other[index] & region

    start = 12
    rows, cols = np.nonzero(lesion[start])
    box = [cols.min(), rows.min(), cols.max(), rows.max()]
    got = propagate_from_slice(predict_slice, lesion.shape[0], start, box)
    assert np.array_equal(got, lesion)  # the far blob is cut off by the boxes
    # every lesion slice once, and one empty slice past each end, where the walk stops
    assert sorted(calls) == list(range(8, 19))


def test_propagation_keeps_a_fast_moving_lesion_with_the_margin():
    lesion, _ = lesion_volume(drift=2.5)
    start = 13
    rows, cols = np.nonzero(lesion[start])
    box = [cols.min(), rows.min(), cols.max(), rows.max()]
    got = propagate_from_slice(lambda i, b: lesion[i], lesion.shape[0], start, box, margin=0.3)
    assert np.array_equal(got, lesion)
    # without a margin the walk loses the part of each slice that moved out of the last box
    tight = propagate_from_slice(lambda i, b: lesion[i], lesion.shape[0], start, box, margin=0, min_margin=0)
    assert tight.sum() < lesion.sum()


def test_propagation_from_an_empty_start_returns_nothing_and_refuses_bad_slices():
    empty = np.zeros((5, 8, 8), bool)
    assert not propagate_from_slice(lambda i, b: empty[i], 5, 2, [1, 1, 4, 4]).any()
    with pytest.raises(BoxError, match="slice 5, but the image has 5 slices"):
        propagate_from_slice(lambda i, b: empty[i], 5, 5, [1, 1, 4, 4])


# ---------------------------------------------------------------- points (issue 22)


def test_points_from_json_and_csv_alone_and_with_a_box_agree():
    from masam.infer.boxes import Points

    obj = {
        "alone": {"points": [[3, 4, 5, 1], [6, 7, 8, 0]], "space": "voxel"},
        "boxed": {"points": [[-10.5, 20, 3, 1]], "box": [-12, 18, 2, 14, 30.25, 9], "space": "world"},
        "sliced": {"points": [[5, 6, 2, 1]], "slice": 2, "box": [1, 2, 8, 9]},
    }
    expected = {
        "alone": Points(((3, 4, 5, 1), (6, 7, 8, 0)), "voxel"),
        "boxed": Points(((-10.5, 20, 3, 1),), "world", Box3D((-12, 18, 2, 14, 30.25, 9), "world")),
        "sliced": Points(((5, 6, 2, 1),), "voxel", SliceBoxes({2: (1, 2, 8, 9)})),
    }
    assert parse_boxes(obj) == expected
    text = (
        "case,x,y,z,label,space,slice,x0,y0,x1,y1,z0,z1\n"
        "alone,3,4,5,1,,,,,,,,\n"
        "boxed,-10.5,20,3,1,world,,,,,,,\n"
        "sliced,,,,,,2,1,2,8,9,,\n"
        "alone,6,7,8,0,voxel,,,,,,,\n"
        "boxed,,,,,world,,-12,18,14,30.25,2,9\n"
        "sliced,5,6,2,1,,,,,,,,\n"
    )
    assert parse_boxes_csv(text) == expected  # rows in any order; a case's points keep their row order


@pytest.mark.parametrize(
    "obj, message",
    [
        ({"a": {"points": [[1, 2, 3]]}}, "case 'a', point 1: expected 4 numbers"),
        ({"a": {"points": [[1, 2, 3, 2]]}}, "point 1: the label must be 1 .include. or 0"),
        ({"a": {"points": []}}, "'points' must be a list"),
        ({"a": {"points": [[1, 2, 3, 1]], "slice": 2}}, "'slice' without a 'box'"),
        ({"a": {"points": [[1, 2, 3, 1]], "propagate": True}}, "unknown keys"),
    ],
)
def test_bad_points_are_named(obj, message):
    with pytest.raises(BoxError, match=message):
        parse_boxes(obj, "p.json")


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_world_points_at_voxel_centres_give_the_voxel_points_on_an_oblique_image(axis):
    from masam.infer.boxes import Points, slice_points

    volume = oblique_volume()
    index = [(3, 2, 5, 1), (11, 6, 9, 0), (19, 8, 15, 1), (3, 2, 7, 0)]
    voxel = slice_points(Points(tuple(index), "voxel"), volume, axis)
    world = Points(tuple((*physical(volume, p[:3]), p[3]) for p in index), "world")
    got = slice_points(world, volume, axis)
    # the table of the module's docstring: (slice, x, y) index dimensions by numpy slice axis
    s_dim, x_dim, y_dim = {0: (2, 0, 1), 1: (1, 0, 2), 2: (0, 1, 2)}[axis]
    expected = {}
    for p in index:
        expected.setdefault(p[s_dim], []).append([float(p[x_dim]), float(p[y_dim]), p[3]])
    assert voxel == expected
    assert got.keys() == expected.keys()
    for key in expected:
        assert np.allclose(np.array(got[key]), np.array(expected[key]), atol=1e-6)


def test_a_point_outside_the_image_is_refused_naming_the_case():
    from masam.infer.boxes import Points, slice_points

    volume = oblique_volume()
    size = np.array([20, 9, 16])
    on_face = Points(((*physical(volume, size - 0.5), 1),), "world")
    assert list(slice_points(on_face, volume, 1)) == [8]  # on the outer face: inside, the last voxel
    beyond = Points(((*physical(volume, [0, 9.6, 3]), 1),), "world")
    with pytest.raises(BoxError, match=r"^pts.json: case 'liver_1': point 1 .* \(world\) lies outside the image"):
        slice_points(beyond, volume, 1, where="pts.json: case 'liver_1'")
    with pytest.raises(BoxError, match=r"point 2 \[20, 1, 1\] \(voxel\) lies outside"):
        slice_points(Points(((0, 0, 0, 1), (20, 1, 1, 0)), "voxel"), volume, 0)
