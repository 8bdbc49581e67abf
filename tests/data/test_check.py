"""Dataset check: a two-channel dataset with many planted faults is reported in one run; the real
BraTS cases as a two-channel dataset are usable; the video layout and DICOM-series cases."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from masam.data.check import SPACING_OUTLIER, check_dataset, format_report
from tests.conftest import SHARED, require_shared
from tests.data.helpers import make_video_dataset, phantom, write_volume

SHAPE = (6, 16, 20)


def _case(root: Path, name: str, spacing=(1.0, 1.0, 3.0), seed=0) -> tuple[np.ndarray, np.ndarray]:
    image, label = phantom(SHAPE, seed=seed)
    write_volume(root / "imagesTr" / f"{name}_0000.nii.gz", image, spacing)
    write_volume(root / "imagesTr" / f"{name}_0001.nii.gz", (image * 0.5).astype(np.float32), spacing)
    write_volume(root / "labelsTr" / f"{name}.nii.gz", label, spacing)
    return image, label


def _faulty_dataset(root: Path) -> Path:
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True)
    meta = {
        "channel_names": {"0": "CT", "1": "CT"},
        "labels": {"background": 0, "organ_a": 1, "organ_b": 2, "never": 3},
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    for i in range(10):
        _case(root, f"case{i:02d}", seed=i)
    images, labels = root / "imagesTr", root / "labelsTr"
    image, label = phantom(SHAPE, seed=1)
    write_volume(labels / "case01.nii.gz", label[:, :, :10])  # 1 label shape
    write_volume(labels / "case02.nii.gz", label, spacing=(1.0, 1.0, 2.0))  # 2 label geometry
    write_volume(labels / "case03.nii.gz", np.where(label == 2, 7, label).astype(np.uint8), (1, 1, 3))  # 3 undeclared
    write_volume(labels / "case04.nii.gz", label.astype(np.float32) * 0.5, (1, 1, 3))  # 4 non-integer
    nan = image.astype(np.float32)
    nan[2, 3, 4] = np.nan
    write_volume(images / "case05_0001.nii.gz", nan, (1, 1, 3))  # 5 NaN
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(image), sitk.GetImageFromArray(image)])
    sitk.WriteImage(four_d, str(images / "case06_0000.nii.gz"))  # 6 a 4D image
    write_volume(images / "case07_0001.nii.gz", image, (1, 1, 3), origin=(5.0, 0, 0))  # 7 channel geometry
    (images / "case08_0001.nii.gz").unlink()  # 8 a missing channel
    write_volume(labels / "case09.nii.gz", np.zeros_like(label), (1, 1, 3))  # 9 an empty label (warning)
    _case(root, "case10", spacing=(1.0, 1.0, 3.0 * SPACING_OUTLIER * 1.5))  # 10 spacing outlier (warning)
    _case(root, "case11")
    (images / "case11_0000.nii.gz").unlink()
    (images / "case11_0000.nii.gz").mkdir()  # 11 a folder named like an image file
    (images / "case12_0000.nii.gz").write_bytes((images / "case00_0000.nii.gz").read_bytes())  # 12 no label
    (images / "case12_0001.nii.gz").write_bytes((images / "case00_0001.nii.gz").read_bytes())
    return root


def test_all_planted_faults_in_one_run(tmp_path):
    root = _faulty_dataset(tmp_path / "Dataset")
    report = check_dataset(root, processes=2)
    found = {(p.case, p.severity, p.problem) for p in report.problems}

    def has(case, words, severity="error"):
        hits = [p for c, s, p in found if c == case and s == severity and all(w in p for w in words)]
        assert hits, f"{case}: no {severity} with {words} in {sorted(found)}"

    has("case01", ["label size (x, y, z) [10, 16, 6] differs from the size [20, 16, 6]"])  # the summary's order
    has("case02", ["label spacing [1.0, 1.0, 2.0] differs from the spacing [1.0, 1.0, 3.0]"])
    has("case03", ["label values [7] are not declared"])
    has("case04", ["not integers", "0.5"])
    has("case05", ["NaN or infinite"])
    has("case06", ["4D image"])
    has("case07", ["channel 0001: origin [5.0, 0.0, 0.0] differs", "channel 0000"])
    has("case08", ["missing channel 0001 (CT)"])
    has("case09", ["empty label"], "warning")
    has("case10", ["spacing (1, 1, 13.5) is far from the dataset's median"], "warning")
    has("case11", ["is a folder"])
    has("case12", ["missing label"])
    has("-", ["class never (3) occurs in no label"], "warning")
    folder = [p for p in report.problems if "is a folder" in p.problem][0]
    assert folder.file == str(root / "imagesTr" / "case11_0000.nii.gz")
    missing = [p for p in report.problems if "missing channel" in p.problem][0]
    assert missing.file == str(root / "imagesTr" / "case08_0001.nii.gz")
    clean = {"case00"}
    assert not [p for p in report.problems if p.case in clean]
    assert not report.ok
    text = format_report(report)
    assert "imagesTr/case11_0000.nii.gz" in text and "is a folder" in text and "NOT usable" in text
    assert "class voxels: background" in text and "never 0" in text and "intensity 0001 (CT)" in text


def test_same_report_in_one_process(tmp_path):
    root = _faulty_dataset(tmp_path / "Dataset")
    assert check_dataset(root, processes=1).problems == check_dataset(root, processes=2).problems


def test_brats_two_channels_is_usable(tmp_path):
    """Two real BraTS cases as FLAIR + T1c (labels stored as float with integer values)."""
    source = require_shared(SHARED / "data" / "deepmedic_brats2015")
    root = tmp_path / "Brats"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for case in sorted(source.glob("brats_2013_pat*"))[:2]:
        (root / "imagesTr" / f"{case.name}_0000.nii.gz").symlink_to(case / "Flair_subtrMeanDivStd.nii.gz")
        (root / "imagesTr" / f"{case.name}_0001.nii.gz").symlink_to(case / "T1c_subtrMeanDivStd.nii.gz")
        (root / "labelsTr" / f"{case.name}.nii.gz").symlink_to(case / "OTMultiClass.nii.gz")
    labels = {"background": 0, "necrosis": 1, "edema": 2, "non-enhancing": 3, "enhancing": 4}
    meta = {"channel_names": {"0": "FLAIR", "1": "T1c"}, "labels": labels, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    report = check_dataset(root, processes=2)
    assert report.ok, format_report(report)
    assert len(report.results) == 2 and all(r.shape == (155, 240, 240) for r in report.results)
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(source / "brats_2013_pat0001_1" / "OTMultiClass.nii.gz")))
    values, counts = np.unique(reference, return_counts=True)
    assert report.results[0].class_counts == {int(v): int(n) for v, n in zip(values, counts, strict=True)}
    assert "intensity 0000 (FLAIR)" in format_report(report)


def test_video_layout_and_dicom_cases(tmp_path):
    root = make_video_dataset(tmp_path / "Video")
    bad = root / "labelsTr" / "seq1" / "frame2.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(bad)
    report = check_dataset(root, processes=1)
    assert [(p.case, "frames differ in size" in p.problem) for p in report.problems] == [("seq1", True)]
    dicom = require_shared(SHARED / "data" / "dicom" / "ge_ct_3slice")
    ct = tmp_path / "Ct"
    (ct / "imagesTr").mkdir(parents=True)
    (ct / "labelsTr").mkdir()
    shutil.copytree(dicom, ct / "imagesTr" / "liver")
    write_volume(ct / "labelsTr" / "liver.nii.gz", np.zeros((3, 512, 512), np.uint8))
    (ct / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"})
    )
    report = check_dataset(ct, processes=1)
    problems = sorted(p.problem for p in report.problems)
    assert problems[0].startswith("class liver (1) occurs in no label") and "empty label" in problems[1]
    assert any("label spacing" in p or "label origin" in p for p in problems)  # written with unit spacing
    assert report.results[0].shape == (3, 512, 512)


def test_missing_dataset_json(tmp_path):
    report = check_dataset(tmp_path)
    assert not report.ok and "dataset.json" in report.problems[0].file and "missing" in report.problems[0].problem
