"""The data side of benchmarks/prompts.py: the synthetic lesion task, the real lesion datasets, and
the reference prompts with their jitter."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from masam.data import load_dataset, read_label, read_volume, slice_axis
from masam.demo import phantom_case
from masam.infer.boxes import Box3D, PropagatedBox, SliceBoxes, read_boxes_file, slice_boxes
from masam.infer.predict_files import boxes_from_labels
from tests.conftest import SHARED, benchmark_modules, require_shared


@pytest.fixture(scope="module")
def bench():
    with benchmark_modules("lesion_data", "prompts") as modules:
        yield modules


def test_the_synthetic_lesion_is_a_faint_patch_inside_the_organ(bench):
    lesion_data, _ = bench
    for seed in range(3):
        image, label = lesion_data.lesion_case(seed)
        plain, organs = phantom_case(seed)
        lesion = label == 2
        assert set(np.unique(label)) == {0, 1, 2}
        assert 50 < lesion.sum() < 600 and len(np.unique(np.nonzero(lesion)[0])) >= 2  # small, several slices
        assert np.array_equal(label > 0, organs == 1)  # organ + lesion = the phantom's liver
        contrast = lesion_data.LESION_CONTRAST
        difference = image.astype(int) - plain
        assert np.all(difference[lesion] == -contrast) and np.all(difference[~lesion] == 0)
        # low contrast: the darkening is one to three standard deviations of the organ's own values
        assert 1.0 < contrast / image[label == 1].std() < 3.0
        faint, _ = lesion_data.lesion_case(seed, contrast=25.0)
        assert np.all((faint.astype(int) - plain)[lesion] == -25)


def test_the_synthetic_task_is_a_dataset_the_project_reads(bench, tmp_path):
    lesion_data, _ = bench
    root = lesion_data.write_lesion_dataset(tmp_path / "Lesions", train_cases=2, test_cases=1, seed=3)
    dataset = load_dataset(root)
    assert len(dataset.training) == 2 and len(dataset.test) == 1 and dataset.num_classes == 2
    image = read_volume(root / "imagesTs" / "lesion_002_0000.nii.gz")
    label = read_label(root / "labelsTs" / "lesion_002.nii.gz", image)
    expected_image, expected_label = lesion_data.lesion_case(3002)
    assert np.array_equal(image.array, expected_image) and np.array_equal(label.array, expected_label)
    assert json.loads((root / "dataset.json").read_text())["labels"] == {"background": 0, "organ": 1, "lesion": 2}


def test_reference_prompts_box_the_lesion_three_ways(bench):
    lesion_data, prompts = bench
    image, label = lesion_data.lesion_case(4)
    volume = read_volume_like(image)
    axis = slice_axis(volume)
    refs = prompts.reference_prompts(label, axis, 2)
    per_slice = boxes_from_labels((label == 2).astype(np.uint8), axis)
    assert slice_boxes(refs["slice_boxes"], volume, axis) == per_slice
    boxed = slice_boxes(refs["box_3d"], volume, axis)
    assert sorted(boxed) == sorted(per_slice)  # the 3D box spans exactly the lesion's slices
    for index, (x0, y0, x1, y1) in per_slice.items():
        bx0, by0, bx1, by1 = boxed[index]
        assert bx0 <= x0 and by0 <= y0 and x1 <= bx1 and y1 <= by1
    areas = (label == 2).sum(axis=(1, 2))
    assert refs["propagate"] == PropagatedBox(int(areas.argmax()), tuple(per_slice[int(areas.argmax())]))


def read_volume_like(array, spacing=(1.2, 1.2, 3.0)):
    from pathlib import Path

    from masam.data import Volume

    return Volume(array, spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), Path("case.nii.gz"))


def test_jittered_prompts_stay_inside_the_image_and_within_the_fraction(bench):
    lesion_data, prompts = bench
    image, label = lesion_data.lesion_case(5)
    volume = read_volume_like(image)
    refs = prompts.reference_prompts(label, 0, 2)
    rng = np.random.default_rng(0)
    for prompt in refs.values():
        assert prompts.jitter_prompt(prompt, 0.0, rng, volume, 0) == prompt
    size = np.array([64, 64, 24])
    low, high = np.array(refs["box_3d"].box[:3]), np.array(refs["box_3d"].box[3:])
    moved = []
    for _ in range(200):
        for prompt in refs.values():
            slice_boxes(prompts.jitter_prompt(prompt, 0.2, rng, volume, 0), volume, 0)  # never outside
        box = np.array(prompts.jitter_prompt(refs["box_3d"], 0.2, rng, volume, 0).box)
        reach = 0.2 * (high - low + 1) + 0.5
        assert np.all(np.abs(box[:3] - low) <= reach) and np.all(np.abs(box[3:] - high) <= reach)
        assert np.all(box[3:] <= size - 1)
        moved.append(np.abs(box - refs["box_3d"].box).max())
    assert max(moved) >= 1  # it does move


def test_boxes_files_for_every_mode_and_jitter_read_back(bench, tmp_path):
    lesion_data, prompts = bench
    root = lesion_data.write_lesion_dataset(tmp_path / "L", train_cases=0, test_cases=2, seed=1)
    files = prompts.write_boxes_files(root, 2, tmp_path / "boxes", seed=0)
    assert sorted(files) == sorted((m, j) for m in ("slice_boxes", "box_3d", "propagate") for j in prompts.JITTERS)
    kinds = {"slice_boxes": SliceBoxes, "box_3d": Box3D, "propagate": PropagatedBox}
    for (mode, _), path in files.items():
        parsed = read_boxes_file(path)
        assert sorted(parsed) == ["lesion_000", "lesion_001"]
        for case, prompt in parsed.items():
            assert isinstance(prompt, kinds[mode])
            image = read_volume(root / "imagesTs" / f"{case}_0000.nii.gz")
            assert slice_boxes(prompt, image, slice_axis(image))


def test_the_deeplesion_case_keeps_its_geometry_and_world_boxes_work_on_it(bench, tmp_path):
    lesion_data, prompts = bench
    npz = require_shared(SHARED / "data" / "medsam2_deeplesion" / "CT_Lesion_000015_01_01_103-115.npz")
    root = lesion_data.write_deeplesion_dataset(tmp_path / "DL", npz)
    data = np.load(npz)
    image = read_volume(root / "imagesTs" / "deeplesion_000015_0000.nii.gz")
    label = read_label(root / "labelsTs" / "deeplesion_000015.nii.gz", image)
    assert np.allclose(image.direction, data["direction"]) and np.allclose(image.spacing, data["spacing"])
    assert np.array_equal(label.array, data["gts"] > 0) and np.array_equal(image.array, data["imgs"])
    axis = slice_axis(image)
    voxel = prompts.reference_prompts(label.array, axis, 1)["box_3d"]
    itk = sitk.ReadImage(str(root / "imagesTs" / "deeplesion_000015_0000.nii.gz"))
    corners = [itk.TransformIndexToPhysicalPoint([int(v) for v in c]) for c in (voxel.box[:3], voxel.box[3:])]
    world = Box3D((*corners[0], *corners[1]), "world")  # the direction flips x/y and z: corners swap
    assert slice_boxes(world, image, axis) == slice_boxes(voxel, image, axis)
    assert sorted(slice_boxes(voxel, image, axis)) == list(range(13))


def test_the_brats_cases_are_cropped_to_the_brain_in_place(bench, tmp_path):
    lesion_data, _ = bench
    folder = require_shared(SHARED / "data" / "deepmedic_brats2015")
    case = "brats_2013_pat0006_1"
    root = lesion_data.write_brats_dataset(tmp_path / "B", test_case=case, folder=folder)
    assert len(list((root / "imagesTr").iterdir())) == 3
    image = sitk.ReadImage(str(root / "imagesTs" / f"{case}_0000.nii.gz"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTs" / f"{case}.nii.gz")))
    original = sitk.ReadImage(str(folder / case / "Flair_subtrMeanDivStd.nii.gz"), sitk.sitkFloat32)
    tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case / "OTMultiClass.nii.gz"))) > 0
    assert (label == 2).sum() == tumour.sum() and set(np.unique(label)) == {0, 1, 2}
    assert image.GetSize() < original.GetSize()
    # the same physical point holds the same value in the crop and the original
    point = image.TransformIndexToPhysicalPoint([5, 7, 9])
    assert image[5, 7, 9] == original[original.TransformPhysicalPointToIndex(point)]


def test_ratios_and_table_read_the_modes_they_name(bench):
    _, prompts = bench
    dice = {"automatic": 0.4, "slice_boxes@0%": 0.8, "box_3d@0%": 0.76, "propagate@0%": 0.6}
    result = {
        "jitters": [0.0],
        "no_prompt": {"automatic": {"lesion_dice_mean": 0.5}},
        "dropout": {k: {"lesion_dice_mean": v} for k, v in dice.items()},
    }
    ratios = prompts.ratios(result)
    assert ratios["dropout: box_3d / slice_boxes"] == pytest.approx(0.95)
    assert ratios["dropout: propagate / slice_boxes"] == pytest.approx(0.75)
    assert ratios["dropout automatic / no_prompt automatic"] == pytest.approx(0.8)
    assert not any(key.startswith("box") or "box model" in key for key in ratios)  # no box model trained
    table = prompts.markdown_table(result).splitlines()
    assert table[2] == "| no_prompt | 0.500 | - | - | - |"
    assert table[3] == "| dropout | 0.400 | 0.800 | 0.760 | 0.600 |"
