"""``masam predict --boxes`` with the three prompt forms (issue 14), through the command line.

The model is replaced by a stand-in whose answer is known (:func:`fake_forward`): without a box it
finds the organ (class 1) and misses the lesion; with a box it finds the lesion (class 2) inside
the box. So each test knows the exact label map the prompt must give."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import masam
from masam.cli import main
from masam.data import Normalization, read_volume
from masam.infer import Predictor
from masam.infer.boxes import Box3D

SHAPE = (20, 32, 32)  # z, y, x
LESION = (slice(6, 13), slice(10, 16), slice(12, 19))  # slices 6..12, rows 10..15, cols 12..18
ORGAN_HU, LESION_HU = 100.0, 200.0
SPACING, ORIGIN = (0.8, 0.9, 2.0), (-5.0, 3.0, 10.0)


def fake_forward(self, stacks: torch.Tensor, boxes: torch.Tensor | None) -> torch.Tensor:
    """Probabilities ``[B, D, 3, S, S]``: organ where the (normalised) image is organ-bright,
    lesion where it is lesion-bright inside the slice's box (none without boxes or a NaN box)."""
    grey = stacks[:, :, 0]  # [B, D, S, S]; CT window (-200, 250) scaled to 0..1
    organ_level, lesion_level = (ORGAN_HU + 200) / 450, (LESION_HU + 200) / 450
    lesion = torch.zeros_like(grey, dtype=torch.bool)
    if boxes is not None:
        rows = torch.arange(grey.shape[-2]).view(-1, 1)
        cols = torch.arange(grey.shape[-1]).view(1, -1)
        for b, d in np.ndindex(*grey.shape[:2]):
            x0, y0, x1, y1 = boxes[b, d].tolist()
            if not np.isnan(x0):
                inside = (cols >= x0) & (cols <= x1) & (rows >= y0) & (rows <= y1)
                lesion[b, d] = inside & (grey[b, d] > (organ_level + lesion_level) / 2)
    organ = (grey > organ_level / 2) & ~lesion
    classes = torch.stack([~(organ | lesion), organ, lesion], dim=2).float()
    return torch.softmax(classes * 20, dim=2)


@pytest.fixture
def fake_model(monkeypatch):
    monkeypatch.setattr(Predictor, "forward_stacks", fake_forward)


def write_image(folder: Path, name: str) -> tuple[Path, np.ndarray]:
    """An organ (everything but a 3-voxel rim) with a brighter lesion in :data:`LESION`; returns
    the file and the label map a box around the whole lesion should give with the automatic
    organ kept."""
    array = np.zeros(SHAPE, np.float32) - 500
    array[:, 3:-3, 3:-3] = ORGAN_HU
    array[LESION] = LESION_HU
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    folder.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    truth = (array == ORGAN_HU).astype(np.uint8)
    truth[LESION] = 2
    return folder / f"{name}.nii.gz", truth


def write_model(path: Path, prompt_dropout: float) -> Path:
    model = masam.load_model(arch="vit_tiny", num_classes=2, image_size=32, rank=4)
    model.metadata = {"normalization": Normalization("CT").to_dict(), "prompt": "box", "box_label": 2,
                      "prompt_dropout": prompt_dropout}  # fmt: skip
    masam.save_weights(model, path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return {"dropout": write_model(folder / "dropout.safetensors", 0.5),
            "box": write_model(folder / "box.safetensors", 0.0)}  # fmt: skip


def predict(model: Path, images: Path, boxes: Path, out: Path, capsys=None) -> int:
    return main(["predict", "-m", str(model), "-i", str(images), "-o", str(out), "--boxes", str(boxes), "--quiet"])


def world(index_xyz) -> list[float]:
    """The physical point of a voxel index (identity direction)."""
    return [o + s * i for o, s, i in zip(ORIGIN, SPACING, index_xyz, strict=True)]


def test_a_3d_box_file_refines_the_lesion_and_keeps_the_automatic_organ(fake_model, models, tmp_path):
    _, truth = write_image(tmp_path / "in", "boxed")
    write_image(tmp_path / "in", "plain")
    boxes = tmp_path / "boxes.json"
    # the lesion's voxels: x 12..18, y 10..15, z 6..12, with a margin in x and y
    boxes.write_text(json.dumps({"boxed": {"box": [10, 8, 6, 20, 17, 12], "space": "voxel"}}))
    assert predict(models["dropout"], tmp_path / "in", boxes, tmp_path / "out") == 0
    assert np.array_equal(read_volume(tmp_path / "out" / "boxed.nii.gz").array, truth)
    automatic = read_volume(tmp_path / "out" / "plain.nii.gz").array  # no prompt: the automatic result
    assert np.array_equal(automatic, np.where(truth == 2, 1, truth))


def test_a_csv_file_with_a_world_box_gives_what_the_json_voxel_box_gives(fake_model, models, tmp_path):
    write_image(tmp_path / "in", "case")
    voxel = tmp_path / "voxel.json"
    voxel.write_text(json.dumps({"case": {"box": [11, 9, 5, 19, 16, 13]}}))
    csv = tmp_path / "boxes.csv"
    corners = world((11, 9, 5)) + world((19, 16, 13))
    csv.write_text("case,x0,y0,z0,x1,y1,z1,space\ncase," + ",".join(map(str, corners)) + ",world\n")
    assert predict(models["dropout"], tmp_path / "in", voxel, tmp_path / "a") == 0
    assert predict(models["dropout"], tmp_path / "in", csv, tmp_path / "b") == 0
    a, b = (read_volume(tmp_path / d / "case.nii.gz").array for d in "ab")
    assert np.array_equal(a, b) and (a == 2).sum() == 7 * 6 * 7


def test_propagation_from_one_slice_stops_at_the_lesions_end(fake_model, models, tmp_path):
    _, truth = write_image(tmp_path / "in", "case")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"case": {"slice": 9, "box": [11, 9, 19, 16], "propagate": True}}))
    assert predict(models["box"], tmp_path / "in", boxes, tmp_path / "out") == 0
    out = read_volume(tmp_path / "out" / "case.nii.gz").array
    # a box-only model: the lesion alone, on its slices 6..12 and no further
    assert np.array_equal(out, (truth == 2).astype(np.uint8) * 2)
    assert np.flatnonzero(out.reshape(SHAPE[0], -1).any(1)).tolist() == list(range(6, 13))


def test_per_slice_boxes_and_the_api_give_the_same(fake_model, models, tmp_path):
    path, truth = write_image(tmp_path / "in", "case")
    per_slice = {str(z): [11, 9, 19, 16] for z in range(6, 13)}
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"case": per_slice}))
    assert predict(models["dropout"], tmp_path / "in", boxes, tmp_path / "out") == 0
    assert np.array_equal(read_volume(tmp_path / "out" / "case.nii.gz").array, truth)
    predictor = Predictor.from_files(models["dropout"])
    volume = read_volume(path)
    by_dict = predictor.predict(volume, boxes={int(k): v for k, v in per_slice.items()}).labels
    by_world = predictor.predict(volume, boxes=Box3D((*world((11, 9, 6)), *world((19, 16, 12))), "world")).labels
    assert np.array_equal(by_dict, truth) and np.array_equal(by_world, truth)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({"box": [10, 8, 6, 20, 17, 20], "space": "voxel"}, "lies outside the image"),
        ({"slice": 25, "box": [11, 9, 19, 16], "propagate": True}, "but the image has 20 slices"),
        ({"4": [11, 9, 40, 16]}, "lies outside the 32x32 slice"),
    ],
)
def test_a_box_outside_the_image_is_a_one_line_error_naming_file_and_case(
    fake_model, models, tmp_path, capsys, prompt, message
):
    write_image(tmp_path / "in", "case")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"case": prompt}))
    assert predict(models["dropout"], tmp_path / "in", boxes, tmp_path / "out") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and f"{boxes}: case 'case'" in err[0], err
    assert not (tmp_path / "out" / "case.nii.gz").exists()


# ---------------------------------------------------------------- points (issue 22)


def fake_forward_points(self, stacks, boxes, points=None):
    """As :func:`fake_forward`; a slice with points finds the lesion-bright pixels when its first
    point is a positive one lying on the lesion (model pixels), and nothing else of the lesion."""
    probs = fake_forward(self, stacks, boxes)
    if points is None:
        return probs
    grey = stacks[:, :, 0]
    lesion_cut = ((ORGAN_HU + 200) / 450 + (LESION_HU + 200) / 450) / 2
    for b, d in np.ndindex(*grey.shape[:2]):
        x, y, label = points[b, d, 0].tolist()
        if label < 0:
            continue
        on_lesion = label == 1 and grey[b, d, round(y), round(x)] > lesion_cut
        lesion = (grey[b, d] > lesion_cut) & on_lesion
        organ = (grey[b, d] > (ORGAN_HU + 200) / 450 / 2) & ~lesion
        classes = torch.stack([~(organ | lesion), organ, lesion]).float()
        probs[b, d] = torch.softmax(classes * 20, dim=0)
    return probs


def test_points_in_voxels_json_and_in_world_csv_refine_their_slices(monkeypatch, models, tmp_path):
    monkeypatch.setattr(Predictor, "forward_stacks", fake_forward_points)
    path, truth = write_image(tmp_path / "in", "case")
    voxel = tmp_path / "points.json"
    # slice 9: a click on the lesion (x 15, y 12); slice 7: a click on the organ only
    voxel.write_text(json.dumps({"case": {"points": [[15, 12, 9, 1], [25, 25, 7, 1]], "space": "voxel"}}))
    csv = tmp_path / "points.csv"
    rows = [",".join(map(str, [*world(p[:3]), p[3]])) for p in ((15, 12, 9, 1), (25, 25, 7, 1))]
    csv.write_text("case,x,y,z,label,space\n" + "".join(f"case,{r},world\n" for r in rows))
    assert predict(models["dropout"], tmp_path / "in", voxel, tmp_path / "a") == 0
    assert predict(models["dropout"], tmp_path / "in", csv, tmp_path / "b") == 0
    a, b = (read_volume(tmp_path / d / "case.nii.gz").array for d in "ab")
    automatic = np.where(truth == 2, 1, truth)
    expected = automatic.copy()
    expected[9] = truth[9]  # the clicked lesion slice is redrawn; the organ click finds no lesion
    assert np.array_equal(a, expected) and np.array_equal(b, expected)
    predictor = Predictor.from_files(models["dropout"])
    by_api = predictor.predict(read_volume(path), points=[[15, 12, 9, 1], [25, 25, 7, 1]]).labels
    assert np.array_equal(by_api, expected)


def test_a_point_outside_the_image_is_a_one_line_error_naming_file_and_case(monkeypatch, models, tmp_path, capsys):
    monkeypatch.setattr(Predictor, "forward_stacks", fake_forward_points)
    write_image(tmp_path / "in", "case")
    points = tmp_path / "points.json"
    points.write_text(json.dumps({"case": {"points": [[15, 12, 9, 1], [15, 12, 20, 0]]}}))
    assert predict(models["dropout"], tmp_path / "in", points, tmp_path / "out") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{points}: case 'case': point 2 [15, 12, 20] (voxel) lies outside the image" in err[0]
    assert not (tmp_path / "out" / "case.nii.gz").exists()
