"""masam demo end to end, with few steps (the full demo is `make demo`)."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from masam.cli import main
from masam.demo import phantom_case


def test_phantom_has_organs_of_different_sizes_and_intensities():
    image, label = phantom_case(0)
    counts = np.bincount(label.ravel(), minlength=4)
    assert counts[1] > counts[3] > 0 and counts[2] > 0  # liver largest; kidneys and spine present
    means = [image[label == c].mean() for c in range(1, 4)]
    assert len({round(m, -1) for m in means}) == 3


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--iterations", "8", "--cases", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-2].startswith("mean Dice: 0.") or out[-2].startswith("mean Dice: 1.")
    assert out[-1] == f"report:      {tmp_path / 'report.html'}"  # make demo ends with the HTML report
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert (tmp_path / "run" / "progress.png").is_file()
    predictions = sorted((tmp_path / "predictions").glob("*.nii.gz"))
    assert len(predictions) == 3
    reference = sitk.ReadImage(str(tmp_path / "dataset" / "imagesTs" / "phantom_003_0000.nii.gz"))
    written = sitk.ReadImage(str(predictions[0]))
    assert written.GetSpacing() == reference.GetSpacing() and written.GetSize() == reference.GetSize()
    assert list((tmp_path / "predictions" / "overlays").glob("*.png"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["mean_per_class"]) == {"liver", "kidney", "spine"}


def test_demo_runs_twice_in_the_same_folder(tmp_path, capsys):
    for _ in range(2):
        assert main(["demo", "-o", str(tmp_path), "--iterations", "2", "--cases", "2"]) == 0
    out = capsys.readouterr()
    assert "starting over: removing the previous demo run" in out.out
    assert "holds predictions of another model" not in out.err and "holds files" not in out.err
    assert len(list((tmp_path / "predictions").glob("*.nii.gz"))) == 3
