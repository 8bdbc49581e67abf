"""The bad-input corpus: every CLI command stops with one line naming the file and the problem,
a non-zero exit code, no traceback and no half-written output."""

from __future__ import annotations

import gzip
import json
import pickle
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import masam
from masam.cli import main
from masam.data import Normalization
from masam.data.check import check_dataset, format_report
from tests.conftest import official_sam_state
from tests.data.helpers import make_dataset, phantom, write_volume


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    sam = root / "sam_tiny.pth"
    torch.save(official_sam_state("vit_tiny", 128, seed=0), sam)
    model = masam.load_model(sam, num_classes=2, image_size=64, rank=4)
    model.metadata = {"normalization": Normalization("CT").to_dict()}
    weights = root / "weights.safetensors"
    masam.save_weights(model, weights)
    good = write_volume(root / "good.nii.gz", phantom((5, 30, 30), seed=1)[0], (1.0, 1.0, 2.0))
    return {"root": root, "sam": sam, "weights": weights, "good": good}


def _dataset(tmp_path, mutate=None):
    root = make_dataset(tmp_path / "D", cases=2, shape=(5, 20, 24))
    if mutate:
        mutate(root)
    return root


def _label(root, array, **geometry):
    write_volume(root / "labelsTr" / "case01.nii.gz", array, geometry.pop("spacing", (1.0, 1.0, 3.0)), **geometry)


def _meta(root, **changes):
    meta = json.loads((root / "dataset.json").read_text())
    meta.update(changes)
    (root / "dataset.json").write_text(json.dumps(meta))


def _image(tmp_path, name, writer):
    path = tmp_path / name
    writer(path)
    return path


def bad_images(tmp_path, kit):
    good = kit["good"]
    return {
        "truncated": _image(
            tmp_path, "trunc.nii.gz", lambda p: p.write_bytes(gzip.compress(gzip.decompress(good.read_bytes())[:500]))
        ),
        "not an image": _image(tmp_path, "notes.nii.gz", lambda p: p.write_text("patient notes")),
        "2D": _image(
            tmp_path,
            "flat.nii.gz",
            lambda p: sitk.WriteImage(sitk.GetImageFromArray(np.zeros((9, 9), np.int16)), str(p)),
        ),
        "4D": _image(
            tmp_path,
            "fourd.nii.gz",
            lambda p: sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.int16), isVector=False), str(p)),
        ),
        "NaN": _image(tmp_path, "nan.nii.gz", lambda p: write_volume(p, np.full((4, 5, 6), np.nan, np.float32))),
    }


IMAGE_MESSAGES = {
    "truncated": "trunc.nii.gz: truncated",
    "not an image": "notes.nii.gz: cannot be read as an image",
    "2D": "flat.nii.gz: is a 2D image",
    "4D": "fourd.nii.gz: is a 4D image",
    "NaN": "nan.nii.gz: contains NaN",
}


def _run(argv, capsys, whole: bool = False):
    """stderr of a failing command; exactly one line of it is masam's message (progress bars may
    precede it). That line, or with ``whole`` all of stderr."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    messages = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("masam ")]
    assert len(messages) == 1, err
    return err if whole else messages[0]


def _predict(kit, image, out, *extra, model=None, sam=None):
    return [
        "predict", "-m", str(model or kit["weights"]), "--sam-checkpoint", str(sam or kit["sam"]),
        "-i", str(image), "-o", str(out), "--quiet", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("kind", list(IMAGE_MESSAGES))
def test_bad_images_for_predict(kind, kit, tmp_path, capsys):
    image = bad_images(tmp_path, kit)[kind]
    out = tmp_path / "out"
    err = _run(_predict(kit, image, out), capsys)
    assert IMAGE_MESSAGES[kind] in err
    assert not [p for p in out.iterdir() if p.is_file()]


DATASET_CASES = {
    "shape": (
        lambda r: _label(r, np.zeros((5, 20, 25), np.uint8)),
        "case01.nii.gz: label size (x, y, z) [25, 20, 5] differs from the image's [24, 20, 5]",
    ),
    "geometry": (
        lambda r: _label(r, np.zeros((5, 20, 24), np.uint8), origin=(9.0, 0.0, 0.0)),
        "case01.nii.gz: label geometry",
    ),
    "undeclared labels": (
        lambda r: _label(r, np.full((5, 20, 24), 7, np.uint8)),
        "case01.nii.gz: label values [7] are not declared",
    ),
    "non-integer labels": (
        lambda r: _label(r, np.full((5, 20, 24), 0.5, np.float32)),
        "case01.nii.gz: label values are not integers",
    ),
    "missing dataset.json": (lambda r: (r / "dataset.json").unlink(), "dataset.json: missing"),
    "malformed dataset.json": (lambda r: (r / "dataset.json").write_text("{'labels':"), "dataset.json: not valid JSON"),
    "unknown modality": (lambda r: _meta(r, channel_names={"0": "ultrasound-ish"}), "dataset.json: unknown modality"),
    "empty dataset": (
        lambda r: [shutil.rmtree(r / d) for d in ("imagesTr", "labelsTr")],
        "imagesTr: no training images",
    ),
}


@pytest.mark.parametrize("kind", list(DATASET_CASES))
def test_bad_datasets_for_preprocess_and_train(kind, tmp_path, capsys):
    mutate, message = DATASET_CASES[kind]
    root = _dataset(tmp_path, mutate)
    err = _run(["preprocess", "-d", str(root), "-o", str(tmp_path / "cache"), "--image-size", "32"], capsys)
    assert message in err
    train = ["train", "-d", str(root), "-o", str(tmp_path / "run"), "--arch", "vit_tiny", "--image-size", "32",
             "--quiet", "--workers", "0"]  # fmt: skip
    err = _run(train, capsys, whole=True)
    if kind == "unknown modality":  # refused before the dataset check, in one line
        assert message in err
    else:  # issue 28: the dataset check's own report, its table, after one line
        report = format_report(check_dataset(root, processes=1))
        assert f"masam train: error: {root}: the dataset is not usable; masam check's report:\n{report}\n" in err
    assert not (tmp_path / "run").exists()  # checked before work: no run folder left behind


def test_empty_folder_is_not_a_dataset(tmp_path, capsys):
    (tmp_path / "E").mkdir()
    assert "dataset.json: missing" in _run(["preprocess", "-d", str(tmp_path / "E"), "-o", str(tmp_path / "c")], capsys)


def test_bad_checkpoints(kit, tmp_path, capsys):
    def predict(model, sam):
        return _run(_predict(kit, kit["good"], tmp_path / "o", model=model, sam=sam), capsys)

    other_arch = tmp_path / "sam_b.pth"
    torch.save(official_sam_state("vit_b", 64, seed=0), other_arch)
    assert "was fine-tuned from a SAM vit_tiny checkpoint, but" in predict(kit["weights"], other_arch)

    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(kit["weights"].read_bytes()[:3000])
    assert "trunc.safetensors: not a readable safetensors file" in predict(truncated, kit["sam"])

    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"x": Payload()}))
    assert "evil.pth: refused" in predict(kit["weights"], evil)
    assert not marker.exists()

    other_base = tmp_path / "sam_other.pth"
    torch.save(official_sam_state("vit_tiny", 128, seed=5), other_base)
    assert "different SAM checkpoint" in predict(kit["weights"], other_base)


def test_boxes_outside_and_unwritable_output(kit, tmp_path, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"good": {"1": [0, 0, 30, 10]}}))
    err = _run(_predict(kit, kit["good"], tmp_path / "o", "--boxes", str(boxes)), capsys)
    assert "outside the 30x30 slice" in err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    err = _run(_predict(kit, kit["good"], blocker / "out"), capsys)
    assert "a_file/out" in err and "Not a directory" in err


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(Exception, match="dataset.json: missing"):
        main(["--debug", "preprocess", "-d", str(tmp_path), "-o", str(tmp_path / "c")])


def test_cuda_without_a_gpu_is_one_line(kit, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    err = _run(_predict(kit, kit["good"], tmp_path / "o", "--device", "cuda"), capsys)
    assert "no CUDA GPU" in err
