"""Issue 18, problem 7: evaluate warns about what it does not evaluate and says where it wrote."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from masam.cli import main
from tests.data.helpers import write_volume


def test_unevaluated_labels_and_unmatched_predictions_are_warned_about(tmp_path, capsys, monkeypatch):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    label = np.zeros((4, 10, 12), np.uint8)
    label[1:3, 2:6, 2:6] = 1
    other = label.copy()
    other[1:3, 6:9, 7:11] = 3  # another organ in the reference, not in dataset.json
    write_volume(ref / "a.nii.gz", other)
    write_volume(pred / "a.nii.gz", label)
    write_volume(pred / "extra.nii.gz", label)
    meta = tmp_path / "dataset.json"
    meta.write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    monkeypatch.chdir(tmp_path)  # the default -o: metrics.json in the current folder
    assert main(["evaluate", "-p", str(pred), "-r", str(ref), "--dataset-json", str(meta)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 2
    assert "extra.nii.gz: no reference in" in warnings[0]
    assert "a: reference holds labels 3 that are not evaluated (classes [1])" in warnings[1]
    assert f"wrote {tmp_path / 'metrics.json'} and {tmp_path / 'metrics.csv'}" in captured.out
    assert json.loads((tmp_path / "metrics.json").read_text())["mean_per_class"]["liver"]["dice"] == 1.0


def test_the_output_default_is_documented(capsys):
    try:
        main(["evaluate", "--help"])
    except SystemExit:
        pass
    assert "metrics.json in the current folder" in " ".join(capsys.readouterr().out.split())


def test_references_without_a_prediction_are_warned_about_and_left_out(tmp_path, capsys):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    pred.mkdir()
    ref.mkdir()
    label = np.zeros((4, 10, 12), np.uint8)
    label[1:3, 2:6, 2:6] = 1
    write_volume(ref / "a.nii.gz", label)
    write_volume(ref / "b.nii.gz", label)
    write_volume(pred / "a.nii.gz", label)
    out = tmp_path / "m.json"
    assert main(["evaluate", "-p", str(pred), "-r", str(ref), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "b.nii.gz: no prediction in" in err and "not evaluated" in err
    assert [c["case"] for c in json.loads(out.read_text())["cases"]] == ["a"]
    (pred / "a.nii.gz").unlink()
    write_volume(pred / "z.nii.gz", label)
    assert main(["evaluate", "-p", str(pred), "-r", str(ref), "-o", str(out)]) == 1
    assert "no prediction for any reference" in capsys.readouterr().err


def test_the_overlays_folder_of_masam_predict_is_not_a_prediction(tmp_path, capsys):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    (pred / "overlays").mkdir(parents=True)
    ref.mkdir()
    label = np.zeros((4, 10, 12), np.uint8)
    label[1:3, 2:6, 2:6] = 1
    write_volume(ref / "a.nii.gz", label)
    write_volume(pred / "a.nii.gz", label)
    Image.new("RGB", (12, 10)).save(pred / "overlays" / "a_00.png")
    assert main(["evaluate", "-p", str(pred), "-r", str(ref), "-o", str(tmp_path / "m.json")]) == 0
    assert "warning" not in capsys.readouterr().err
