"""Prompts as people give them: boxes on slices, one 3D box (voxel or world coordinates), one box
on one slice to be propagated, and points (include / exclude clicks, issue 22) alone or with a box;
read from JSON or CSV, turned into the per-slice boxes and points the predictor takes.

The per-slice frame is the predictor's: the image's slices along the slice axis (``np.moveaxis(
array, axis, 0)``), ``x`` the slice's columns and ``y`` its rows, in voxels, inclusive. With the
image's (x, y, z) index order (SimpleITK's) that means, by numpy slice axis:

- axis 0 (slices along z): slice index z, box x = index x, box y = index y;
- axis 1 (slices along y): slice index y, box x = index x, box y = index z;
- axis 2 (slices along x): slice index x, box x = index y, box y = index z.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..data.io import Volume
from ..errors import InputError

SPACES = ("voxel", "world")


class BoxError(InputError):
    """A box prompt that cannot be used; the message names its file (or case) and the problem."""


@dataclass(frozen=True)
class SliceBoxes:
    """Boxes on slices: ``{slice index: (x0, y0, x1, y1)}`` in the per-slice frame (voxels, inclusive)."""

    boxes: dict[int, tuple[float, float, float, float]]


@dataclass(frozen=True)
class Box3D:
    """One 3D box ``(x0, y0, z0, x1, y1, z1)``. ``space="voxel"``: inclusive voxel indices in the
    image's (x, y, z) index order; ``"world"``: two opposite corners in physical mm, read through
    the image's direction (the box is aligned with the image's axes, so oblique images work)."""

    box: tuple[float, float, float, float, float, float]
    space: str = "voxel"


@dataclass(frozen=True)
class PropagatedBox:
    """A box ``(x0, y0, x1, y1)`` on slice ``slice`` (per-slice frame), to be propagated to the
    neighbouring slices from the prediction (see :func:`propagate_from_slice`)."""

    slice: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Points:
    """Points ``(x, y, z, label)`` in click order: label 1 include, 0 exclude. ``space="voxel"``:
    voxel indices in the image's (x, y, z) index order (fractions allowed); ``"world"``: physical
    mm, read through the image's direction as a 3D box is. A point prompts the slice it lies on.
    ``box``: a box prompt given with the points (slice boxes or a 3D box, in ``space`` too)."""

    points: tuple[tuple[float, float, float, int], ...]
    space: str = "voxel"
    box: SliceBoxes | Box3D | None = None


Prompt = SliceBoxes | Box3D | PropagatedBox | Points


def _numbers(values, count: int, where: str) -> tuple[float, ...]:
    if not isinstance(values, (list, tuple)) or len(values) != count:
        raise BoxError(f"{where}: expected {count} numbers, got {values!r}")
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise BoxError(f"{where}: expected {count} numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out) or any(isinstance(v, bool) for v in values):
        raise BoxError(f"{where}: expected {count} finite numbers, got {values!r}")
    return out


def _ordered(box: tuple[float, ...], where: str) -> tuple[float, ...]:
    """Voxel boxes are (lows, highs): each low must not exceed its high."""
    half = len(box) // 2
    if any(box[i] > box[i + half] for i in range(half)):
        raise BoxError(f"{where}: box {list(box)} has a low corner above its high corner")
    return box


def _slice_index(key, where: str) -> int:
    try:
        index = int(key)
    except (TypeError, ValueError):
        raise BoxError(f"{where}: slice index {key!r} is not an integer") from None
    if isinstance(key, float) and key != index or isinstance(key, bool) or index < 0:
        raise BoxError(f"{where}: slice index {key!r} is not a non-negative integer")
    return index


def parse_prompt(value, where: str) -> Prompt:
    """One case's prompt from its JSON form (see :func:`parse_boxes`)."""
    if not isinstance(value, dict) or not value:
        raise BoxError(f"{where}: expected an object of slice boxes, a 'box' or 'points', got {value!r}")
    if "points" in value:
        return _parse_points(value, where)
    if "box" not in value:
        boxes = {}
        for key, box in value.items():
            index = _slice_index(key, where)
            boxes[index] = _ordered(_numbers(box, 4, f"{where}, slice {key}"), f"{where}, slice {key}")
        return SliceBoxes(boxes)
    unknown = set(value) - {"box", "space", "slice", "propagate"}
    if unknown:
        raise BoxError(f"{where}: unknown keys {sorted(unknown)} (known: box, space, slice, propagate)")
    if "slice" in value:
        index = _slice_index(value["slice"], where)
        box = _ordered(_numbers(value["box"], 4, where), where)
        propagate = value.get("propagate", False)
        if not isinstance(propagate, bool):
            raise BoxError(f"{where}: 'propagate' must be true or false, got {propagate!r}")
        return PropagatedBox(index, box) if propagate else SliceBoxes({index: box})
    space = value.get("space", "voxel")
    if space not in SPACES:
        raise BoxError(f"{where}: 'space' must be 'voxel' or 'world', got {space!r}")
    box = _numbers(value["box"], 6, where)
    return Box3D(_ordered(box, where) if space == "voxel" else box, space)


def _parse_points(value: dict, where: str) -> Points:
    """``{"points": [[x, y, z, label], ...], "space": ...}``, with a 3D box or a slice's box or alone."""
    unknown = set(value) - {"points", "box", "space", "slice"}
    if unknown:
        raise BoxError(f"{where}: unknown keys {sorted(unknown)} beside points (known: points, box, space, slice)")
    space = value.get("space", "voxel")
    if space not in SPACES:
        raise BoxError(f"{where}: 'space' must be 'voxel' or 'world', got {space!r}")
    given = value["points"]
    if not isinstance(given, list) or not given:
        raise BoxError(f"{where}: 'points' must be a list of [x, y, z, label], got {given!r}")
    points = []
    for i, point in enumerate(given, start=1):
        x, y, z, label = _numbers(point, 4, f"{where}, point {i}")
        if label not in (0.0, 1.0):
            raise BoxError(f"{where}, point {i}: the label must be 1 (include) or 0 (exclude), got {point[3]!r}")
        points.append((x, y, z, int(label)))
    box = None
    if "box" in value:
        box = parse_prompt({k: v for k, v in value.items() if k != "points"}, where)
    elif "slice" in value:
        raise BoxError(f"{where}: 'slice' without a 'box'")
    return Points(tuple(points), space, box)


def parse_boxes(obj, source: str = "<boxes>") -> dict[str, Prompt]:
    """Prompts per case from the JSON forms::

        {"CASE": {"SLICE": [x0, y0, x1, y1], ...}}                      # boxes on slices
        {"CASE": {"box": [x0, y0, z0, x1, y1, z1], "space": "voxel"}}   # or "world" (mm)
        {"CASE": {"slice": S, "box": [x0, y0, x1, y1], "propagate": true}}
        {"CASE": {"points": [[x, y, z, 1], [x, y, z, 0]], "space": "voxel"}}  # a box may go with them

    ``source`` names the input in error messages."""
    if not isinstance(obj, dict):
        raise BoxError(f"{source}: expected an object mapping case names to boxes, got {type(obj).__name__}")
    return {str(case): parse_prompt(value, f"{source}: case {case!r}") for case, value in obj.items()}


# CSV: one row per box or point, header required. A row with z0..z1 is a 3D box; a row with a slice
# is a slice box (several rows of one case combine), propagated when its propagate cell is true; a
# row with x, y, z and label is a point (a case's points combine, in row order, and join its box).
CSV_3D = ("case", "x0", "y0", "z0", "x1", "y1", "z1")
CSV_SLICE = ("case", "slice", "x0", "y0", "x1", "y1")
CSV_POINT = ("case", "x", "y", "z", "label")
CSV_OPTIONAL = ("space", "propagate")
_TRUE, _FALSE = ("1", "true", "yes", "y"), ("", "0", "false", "no", "n")


def _csv_row(row: dict[str, str], where: str) -> tuple[str, Prompt]:
    """One CSV row as ``(case, prompt)``."""
    case = (row.get("case") or "").strip()
    if not case:
        raise BoxError(f"{where}: empty case name")
    cell = {k: (v or "").strip() for k, v in row.items() if k is not None}
    forms = [any(cell.get(k) for k in ("z0", "z1")), bool(cell.get("slice")), bool(cell.get("label"))]
    if sum(forms) > 1:
        raise BoxError(f"{where}: give either z0..z1 (a 3D box), slice (a slice box) or label (a point) in one row")
    space = cell.get("space") or "voxel"
    if forms[0]:
        value = {"box": [cell.get(k, "") for k in CSV_3D[1:]], "space": space}
    elif forms[2]:
        value = {"points": [[cell.get(k, "") for k in CSV_POINT[1:]]], "space": space}
    else:
        propagate = cell.get("propagate", "").lower()
        if propagate not in _TRUE + _FALSE:
            raise BoxError(f"{where}: propagate must be true or false, got {cell.get('propagate')!r}")
        value = {"slice": cell.get("slice", ""), "box": [cell.get(k, "") for k in CSV_SLICE[2:]]}
        value["propagate"] = propagate in _TRUE
    return case, parse_prompt(value, f"{where}, case {case!r}")


def parse_boxes_csv(text: str, source: str = "<boxes>") -> dict[str, Prompt]:
    """Prompts per case from CSV text with a header naming the columns (any order): ``case,x0,y0,
    z0,x1,y1,z1[,space]`` for 3D boxes, ``case,slice,x0,y0,x1,y1[,propagate]`` for slice boxes,
    ``case,x,y,z,label[,space]`` for points; one file may hold several forms (the union of the
    columns, cells of the other forms left empty)."""
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    reader.fieldnames = header
    if all(set(form) - set(header) for form in (CSV_3D, CSV_SLICE, CSV_POINT)):
        raise BoxError(
            f"{source}: the first line must be a header with the columns {','.join(CSV_3D)}[,space], "
            f"{','.join(CSV_SLICE)}[,propagate] or {','.join(CSV_POINT)}[,space]; got {','.join(header) or 'nothing'}"
        )
    prompts: dict[str, Prompt] = {}
    for line, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        where = f"{source}: row {line}"
        case, prompt = _csv_row(row, where)
        prompts[case] = _merge(prompts.get(case), prompt, case, where)
    return prompts


def _merge(old: Prompt | None, new: Prompt, case: str, where: str) -> Prompt:
    """Slice-box rows of one case combine, and its points join each other and its box; anything
    else gives a case one prompt only."""
    if old is None:
        return new
    if isinstance(old, Points) or isinstance(new, Points):
        given = [p for p in (old, new) if isinstance(p, Points)]
        if len({p.space for p in given}) > 1:
            raise BoxError(f"{where}: case {case!r} has points in both voxel and world space")
        box = None
        for part in [p for p in (old, new) if not isinstance(p, Points)] + [p.box for p in given if p.box]:
            box = _merge(box, part, case, where)
        if isinstance(box, PropagatedBox):
            raise BoxError(f"{where}: case {case!r}: points go with boxes on slices or a 3D box, not a propagated box")
        return Points(tuple(q for p in given for q in p.points), given[0].space, box)
    if isinstance(old, SliceBoxes) and isinstance(new, SliceBoxes):
        twice = set(old.boxes) & set(new.boxes)
        if twice:
            raise BoxError(f"{where}: case {case!r} has a second box on slice {min(twice)}")
        return SliceBoxes({**old.boxes, **new.boxes})
    raise BoxError(
        f"{where}: case {case!r} already has a prompt; a case takes boxes on slices, or one 3D box, "
        "or one propagated box (each with points or without)"
    )


def read_boxes_file(path: str | os.PathLike) -> dict[str, Prompt]:
    """Prompts per case from a ``.csv`` file (see :func:`parse_boxes_csv`) or a JSON file (any
    other name, see :func:`parse_boxes`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise BoxError(f"{path}: cannot read boxes: {err}") from None
    if path.name.lower().endswith(".csv"):
        return parse_boxes_csv(text, str(path))
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise BoxError(f"{path}: not valid JSON ({err}); a CSV file must end in .csv") from None
    return parse_boxes(obj, str(path))


def volume_shape(volume: Volume) -> tuple[int, int, int]:
    """The image's size in (x, y, z) index order (video: x, y, frame)."""
    d, h, w = volume.array.shape[:3]
    return w, h, d


def continuous_index(volume: Volume, points: np.ndarray) -> np.ndarray:
    """Continuous voxel indices ``[n, 3]`` (x, y, z) of physical points ``[n, 3]`` (mm), through
    the image's origin, spacing and direction."""
    geometry = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    geometry.SetSpacing(volume.spacing)
    geometry.SetOrigin(volume.origin)
    geometry.SetDirection(volume.direction)
    return np.array([geometry.TransformPhysicalPointToContinuousIndex(tuple(map(float, p))) for p in points])


def index_box(box: Box3D, volume: Volume, where: str = "box") -> tuple[np.ndarray, np.ndarray]:
    """Inclusive voxel index bounds ``(low[3], high[3])`` (x, y, z order, integers) of a 3D box.

    A world box's two corners go to continuous indices through the image's geometry
    (``TransformPhysicalPointToContinuousIndex``); it covers the voxels whose centres lie inside.
    A box reaching outside the image (voxel: past the first or last index; world: past the
    image's outer voxel faces) is an error, as is one that covers no voxel centre."""
    size = np.asarray(volume_shape(volume))
    values = np.asarray(box.box, float).reshape(2, 3)
    tol = 1e-3  # rounding of corners written from voxel centres or faces
    if box.space == "voxel":
        low, high = values
        inside = (low >= 0).all() and (high <= size - 1).all()
        extent = f"voxel indices 0..{size - 1} (x, y, z)"
        low, high = np.ceil(low - tol), np.floor(high + tol)  # fractional indices: the voxels inside
    else:
        corners = continuous_index(volume, values)
        low, high = corners.min(0), corners.max(0)
        inside = (low >= -0.5 - tol).all() and (high <= size - 0.5 + tol).all()
        extent = f"continuous indices {np.round(low, 2)}..{np.round(high, 2)} against -0.5..{size - 0.5}"
        low, high = np.ceil(low - tol), np.floor(high + tol)
    if not inside:
        raise BoxError(f"{where}: {box.space} box {list(box.box)} lies outside the image ({extent})")
    if (low > high).any():
        raise BoxError(f"{where}: {box.space} box {list(box.box)} covers no voxel centre")
    return low.astype(int), high.astype(int)


def _frame_axes(axis: int) -> tuple[int, int, int]:
    """Index dimensions (x=0, y=1, z=2) of the slice, the box's x and the box's y for a numpy
    slice axis: numpy axis a is index dimension 2 - a, and a slice keeps the other numpy axes in
    order (rows first)."""
    rows_axis, cols_axis = (a for a in range(3) if a != axis)
    return 2 - axis, 2 - cols_axis, 2 - rows_axis


def _checked_slice_boxes(boxes: dict, volume: Volume, axis: int, where: str) -> dict[int, list[float]]:
    size = volume_shape(volume)
    s_dim, x_dim, y_dim = _frame_axes(axis)
    n, cols, rows = size[s_dim], size[x_dim], size[y_dim]
    out = {}
    for index, box in sorted(boxes.items()):
        if not 0 <= index < n:
            raise BoxError(f"{where}: box for slice {index}, but the image has {n} slices")
        if not (0 <= box[0] <= box[2] < cols and 0 <= box[1] <= box[3] < rows):
            raise BoxError(f"{where}: box {list(box)} for slice {index} lies outside the {cols}x{rows} slice")
        out[index] = [float(v) for v in box]
    return out


def slice_boxes(prompt: Prompt, volume: Volume, axis: int, where: str = "box") -> dict[int, list[float]]:
    """The per-slice boxes ``{slice index: [x0, y0, x1, y1]}`` that the predictor takes.

    A 3D box gives one box on every slice inside its extent and none outside; a propagated box
    gives its own slice's box only (the others come from the predictions). ``axis``: the numpy
    slice axis (0 for video). ``where`` names the prompt in error messages."""
    if volume.is_video:
        axis = 0
    if isinstance(prompt, SliceBoxes):
        return _checked_slice_boxes(prompt.boxes, volume, axis, where)
    if isinstance(prompt, PropagatedBox):
        return _checked_slice_boxes({prompt.slice: prompt.box}, volume, axis, where)
    low, high = index_box(prompt, volume, where)
    s_dim, x_dim, y_dim = _frame_axes(axis)
    box = [float(low[x_dim]), float(low[y_dim]), float(high[x_dim]), float(high[y_dim])]
    return {s: list(box) for s in range(int(low[s_dim]), int(high[s_dim]) + 1)}


def slice_points(prompt: Points, volume: Volume, axis: int, where: str = "points") -> dict[int, list[list[float]]]:
    """The per-slice points ``{slice index: [[x, y, label], ...]}`` (click order, the slice frame
    in voxels) of a points prompt. Each point prompts the slice whose centre is nearest; a point
    outside the image (voxel: past the first or last index; world: past its outer voxel faces) is
    an error naming ``where``."""
    if volume.is_video:
        axis = 0
    size = np.asarray(volume_shape(volume))
    tol = 1e-3
    coords = np.array([p[:3] for p in prompt.points], float)
    if prompt.space == "voxel":
        index, low, high = coords, np.zeros(3), size - 1.0
    else:
        index, low, high = continuous_index(volume, coords), np.full(3, -0.5), size - 0.5
    s_dim, x_dim, y_dim = _frame_axes(axis)
    out: dict[int, list[list[float]]] = {}
    for i, (point, at) in enumerate(zip(prompt.points, index), start=1):
        if (at < low - tol).any() or (at > high + tol).any():
            raise BoxError(
                f"{where}: point {i} {_shown(point[:3])} ({prompt.space}) lies outside the image "
                f"(voxel indices {_shown(np.round(at, 2))} against 0..{_shown(size - 1)})"
            )
        at = np.clip(at, 0, size - 1)
        out.setdefault(int(np.floor(at[s_dim] + 0.5)), []).append([float(at[x_dim]), float(at[y_dim]), int(point[3])])
    return out


def _shown(values) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def slice_prompts(
    prompt: Prompt, volume: Volume, axis: int, where: str = "box"
) -> tuple[dict[int, list[float]], dict[int, list[list[float]]]]:
    """The per-slice boxes and points of a prompt other than a propagated box (see
    :func:`slice_boxes` and :func:`slice_points`)."""
    if not isinstance(prompt, Points):
        return slice_boxes(prompt, volume, axis, where), {}
    boxes = slice_boxes(prompt.box, volume, axis, where) if prompt.box is not None else {}
    return boxes, slice_points(prompt, volume, axis, where)


def prompt_region(boxes: dict[int, list[float]], points: dict, shape: tuple[int, int, int]) -> np.ndarray:
    """Where a prompt may redraw its target, slice-first ``[N, rows, cols]`` bool: inside the
    boxes, and the whole of a slice that has points but no box."""
    region = box_region(boxes, shape)
    for index in set(points) - set(boxes):
        region[index] = True
    return region


def box_region(boxes: dict[int, list[float]], shape: tuple[int, int, int]) -> np.ndarray:
    """The voxels inside per-slice boxes, slice-first ``[N, rows, cols]`` bool (move the first
    axis back with ``masam.data.slices.labels_from_slices``)."""
    region = np.zeros(shape, bool)
    for index, (x0, y0, x1, y1) in boxes.items():
        rows = slice(max(0, math.floor(y0)), math.ceil(y1) + 1)
        cols = slice(max(0, math.floor(x0)), math.ceil(x1) + 1)
        region[index, rows, cols] = True
    return region


def mask_box(mask: np.ndarray) -> list[float] | None:
    """The box ``[x0, y0, x1, y1]`` (inclusive) around a 2D mask ``[rows, cols]``; None if empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return [float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())]


def grow_box(box: list[float], shape: tuple[int, int], margin: float, min_margin: float) -> list[float]:
    """Each side moved out by ``margin`` times the box's side (at least ``min_margin`` pixels),
    clipped to a slice of ``shape`` (rows, cols)."""
    x0, y0, x1, y1 = box
    mx = max(min_margin, margin * (x1 - x0 + 1))
    my = max(min_margin, margin * (y1 - y0 + 1))
    rows, cols = shape
    return [max(0.0, x0 - mx), max(0.0, y0 - my), min(cols - 1.0, x1 + mx), min(rows - 1.0, y1 + my)]


def propagate_from_slice(
    predict_slice: Callable[[int, list[float]], np.ndarray],
    num_slices: int,
    start: int,
    box: list[float],
    *,
    margin: float = 0.1,
    min_margin: float = 2.0,
    min_pixels: int = 1,
    clip_to_box: bool = True,
) -> np.ndarray:
    """A 3D mask ``[num_slices, rows, cols]`` (bool, slice-first) from a box on one slice.

    ``predict_slice(index, box) -> [rows, cols]`` bool predicts the target on one slice given a
    box ``[x0, y0, x1, y1]``. The start slice gets ``box``; then, walking away from it in both
    directions, each slice gets the box around the previous slice's mask grown by ``margin``
    (:func:`grow_box`). A direction stops at the first slice whose mask has fewer than
    ``min_pixels`` pixels (the target has ended). ``clip_to_box``: keep only the mask inside the
    box it was given, so the walk cannot drift onto a neighbouring structure."""
    if not 0 <= start < num_slices:
        raise BoxError(f"propagation starts on slice {start}, but the image has {num_slices} slices")

    def predict(index: int, given: list[float]) -> np.ndarray:
        mask = np.asarray(predict_slice(index, given), bool)
        if clip_to_box:
            mask = mask & box_region({0: given}, (1, *mask.shape))[0]
        return mask

    first = predict(start, list(box))
    out = np.zeros((num_slices, *first.shape), bool)
    if first.sum() < min_pixels:
        return out
    out[start] = first
    for step in (1, -1):
        previous, index = first, start + step
        while 0 <= index < num_slices:
            given = grow_box(mask_box(previous), previous.shape, margin, min_margin)
            mask = predict(index, given)
            if mask.sum() < min_pixels:
                break
            out[index], previous, index = mask, mask, index + step
    return out
