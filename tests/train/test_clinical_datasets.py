"""Issue 15: ``masam check`` on the command line, ``masam train`` checking the dataset first, DICOM
series folders as training cases, and folders named like image files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import masam
from masam.cli import main
from masam.data.dicom import read_series
from masam.data.io import write_label
from masam.data.normalize import Normalization, spec_for
from masam.infer.predict_files import find_inputs
from tests.conftest import SHARED, require_shared
from tests.data.helpers import make_dataset

DICOM = SHARED / "data" / "dicom"
TINY = ["--arch", "vit_tiny", "--image-size", "32", "--rank", "4", "--warmup", "1", "--workers", "0", "--quiet"]


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "D", cases=3, shape=(6, 24, 24))


def test_check_command_exit_code_and_report(dataset, capsys):
    assert main(["check", "-d", str(dataset), "--processes", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 cases checked" in out and "no problems found" in out and out.rstrip().endswith("usable")
    label = dataset / "labelsTr" / "case01.nii.gz"
    label.unlink()
    (dataset / "imagesTr" / "case02_0000.nii.gz").write_bytes(b"not an image")
    assert main(["check", "-d", str(dataset)]) == 1
    out = capsys.readouterr().out
    assert "case01" in out and "missing label" in out and "NOT usable" in out
    assert "case02_0000.nii.gz" in out


def test_train_stops_with_the_check_report_before_preprocessing(dataset, tmp_path, capsys):
    (dataset / "labelsTr" / "case01.nii.gz").unlink()
    (dataset / "imagesTr" / "case02_0000.nii.gz").write_bytes(b"not an image")
    run = tmp_path / "run"
    assert main(["train", "-d", str(dataset), "-o", str(run), *TINY, "--iterations", "1"]) == 1
    err = capsys.readouterr().err
    assert "not usable" in err and "missing label" in err and "case02_0000.nii.gz" in err  # both faults at once
    assert not (run / "cache").exists()


def test_folder_named_like_an_image_is_reported_by_train_and_predict(dataset, tmp_path, capsys):
    bad = dataset / "imagesTr" / "case09_0000.nii.gz"
    bad.mkdir()
    run = tmp_path / "run"
    assert main(["train", "-d", str(dataset), "-o", str(run), *TINY, "--iterations", "1"]) == 1
    err = capsys.readouterr().err
    assert "imagesTr/case09_0000.nii.gz" in err and "is a folder" in err and "no training images" not in err
    # without the check, the dataset reader says the same
    assert main(["train", "-d", str(dataset), "-o", str(run), *TINY, "--no-check-dataset"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: is a folder" in err
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "scan.nii.gz").mkdir()
    ((name, path),) = find_inputs(inputs)  # listed as a case, so that reading it names the folder
    assert name == "scan" and path == inputs / "scan.nii.gz"
    weights = tmp_path / "tiny.safetensors"
    model = masam.load_model(arch="vit_tiny", num_classes=2, image_size=32, rank=4)
    model.input_spec = spec_for(Normalization("CT"), ("CT",), 5, 32)
    masam.save_weights(model, weights)
    args = ["predict", "-m", str(weights), "-o", str(tmp_path / "o"), "--quiet"]
    for given in (inputs, inputs / "scan.nii.gz"):
        assert main([*args, "-i", str(given)]) == 1
        err = capsys.readouterr().err
        assert f"{inputs / 'scan.nii.gz'}: is a folder" in err and "no images" not in err


def test_train_on_dicom_series_folders_then_predict_a_series(tmp_path):
    source = require_shared(DICOM / "philips_ct_phantom")
    root = tmp_path / "D"
    volume = read_series(source)
    labels = (volume.array > np.percentile(volume.array, 85)).astype(np.uint8)
    (root / "labelsTr").mkdir(parents=True)
    for case in ("phantomA", "phantomB"):
        shutil.copytree(source, root / "imagesTr" / case)
        write_label(root / "labelsTr" / f"{case}.nii.gz", labels, volume)
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "bright": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    args = ["train", "-d", str(root), "-o", str(run), *TINY, "--iterations", "2", "--batch-size", "2"]
    assert main([*args, "--val-every", "0", "--val-fraction", "0"]) == 0
    info = json.loads((run / "cache" / "phantomA.json").read_text())
    assert info["shape"] == [28, 512, 512] and np.allclose(info["origin"], volume.origin)
    cached = np.load(run / "cache" / "phantomA_label.npy")
    assert cached.shape == (28, 32, 32) and cached.max() == 1
    out = tmp_path / "out"
    assert main(["predict", "-m", str(run), "-i", str(source), "-o", str(out), "--mode", "fast", "--quiet"]) == 0
    assert [p.name for p in out.glob("[!.]*")] == ["STD_BRAIN_5MM_201.nii.gz"]
