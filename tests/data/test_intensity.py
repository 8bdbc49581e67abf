"""Issue 18, problem 9: warnings where a prediction is doubtful (intensities far from training, another
modality, a folder holding another model's files), -o must name a folder, a short Prediction repr."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import masam
from masam.cli import main
from masam.data import Normalization
from masam.data.intensity import intensity_summary
from masam.data.normalize import spec_for
from masam.data.slices import prepare_image
from masam.data.volume import Volume
from masam.infer.predictor import Predictor
from masam.model.checkpoint import save_weights
from tests.data.helpers import write_volume


def ct_like(seed: int) -> np.ndarray:
    """Soft tissue around 40 HU with a brighter organ, [z, y, x] int16."""
    rng = np.random.default_rng(seed)
    image = rng.normal(40, 30, (6, 40, 48))
    image[:, 10:25, 12:30] += 80
    return image.astype(np.int16)


def mr_like(seed: int) -> np.ndarray:
    """MR-like values (0 to ~1200, no HU meaning)."""
    return np.random.default_rng(seed).uniform(300, 1200, (6, 40, 48)).astype(np.int16)


def make_model(seed: int):
    torch.manual_seed(seed)
    model = masam.load_model(arch="vit_tiny", num_classes=2, image_size=64, rank=4)
    norm = Normalization("CT")
    eye = (1, 0, 0, 0, 1, 0, 0, 0, 1)
    volumes = [Volume(ct_like(i), (1.0, 1.0, 3.0), (0.0, 0.0, 0.0), eye, Path("t")) for i in range(3)]
    summary = intensity_summary(prepare_image(v, norm, 64)[0].numpy() for v in volumes)
    model.input_spec = dataclasses.replace(spec_for(norm, ("CT",), 5, 64), intensity=summary)
    return model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("doubtful")
    for name, model in (("a", make_model(0)), ("b", make_model(1))):
        save_weights(model, root / f"{name}.safetensors")
    (root / "in").mkdir()
    write_volume(root / "in" / "ct_case_0000.nii.gz", ct_like(7), (1.0, 1.0, 3.0))
    write_volume(root / "in" / "mr_case_0000.nii.gz", mr_like(8), (1.0, 1.0, 3.0))
    return root


def test_intensities_far_from_training_and_another_modality_are_named_per_case(files, tmp_path, capsys):
    assert main(["predict", "-m", str(files / "a.safetensors"), "-i", str(files / "in"), "-o", str(tmp_path / "p"),
                 "--quiet"]) == 0  # fmt: skip
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and err[0].startswith("masam predict: warning: mr_case: normalised intensities")
    assert main(["predict", "-m", str(files / "a.safetensors"), "-i", str(files / "in" / "ct_case_0000.nii.gz"),
                 "-o", str(tmp_path / "q"), "--modality", "MRI", "--quiet"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "warning: ct_case: normalised as MRI, but the model was trained on CT" in err


def test_a_folder_with_another_models_predictions_is_reported(files, tmp_path, capsys):
    image = str(files / "in" / "ct_case_0000.nii.gz")
    out = tmp_path / "p"
    for model in ("a", "a", "b"):
        assert main(["predict", "-m", str(files / f"{model}.safetensors"), "-i", image, "-o", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("holds predictions of another model") == 1  # only when b writes after a
    assert (out / ".masam_model.json").is_file()


@pytest.mark.parametrize("name", ["pred.nii.gz", "file"])
def test_output_must_name_a_folder(files, tmp_path, capsys, name):
    target = tmp_path / name
    if name == "file":
        target.write_text("x")
    image = str(files / "in" / "ct_case_0000.nii.gz")
    assert main(["predict", "-m", str(files / "a.safetensors"), "-i", image, "-o", str(target)]) == 1
    assert "-o names the output folder, not a file" in capsys.readouterr().err
    assert name == "file" or not target.exists()


def test_prediction_prints_a_short_summary(files):
    result = Predictor.from_files(files / "a.safetensors").predict(files / "in" / "ct_case_0000.nii.gz")
    text = repr(result)
    assert text.startswith("Prediction(ct_case_0000.nii.gz: labels [6, 40, 48] uint8") and len(text) < 300
    assert "0 warning(s)" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"masam {masam.__version__}"
