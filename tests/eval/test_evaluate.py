"""Issue 18, problem 7: evaluate warns about what it does not evaluate and says where it wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from masam.cli import main
from masam.eval.evaluate import evaluate_folders
from tests.data.helpers import write_volume
from tests.eval.test_metrics import brute_force


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


def test_evaluate_folders_and_command(tmp_path, capsys):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    spacing_xyz = (0.8, 0.8, 2.5)
    ref = np.zeros((8, 20, 20), np.uint8)
    ref[2:6, 4:12, 4:12] = 1
    ref[3:5, 14:18, 14:18] = 2
    pred = ref.copy()
    pred[2:6, 4:12, 4:14][pred[2:6, 4:12, 4:14] == 0] = 1
    for name in ("a", "b"):
        write_volume(ref_dir / f"{name}.nii.gz", ref, spacing_xyz)
        write_volume(pred_dir / f"{name}.nii.gz", pred if name == "a" else ref, spacing_xyz)
    results = evaluate_folders(pred_dir, ref_dir)
    by_case = {row["case"]: row["classes"] for row in results["cases"]}
    dice_a, hd_a, nsd_a = brute_force(pred == 1, ref == 1, spacing_xyz[::-1], 2.0)
    assert by_case["a"]["1"]["dice"] == pytest.approx(dice_a, abs=1e-6)
    assert abs(by_case["a"]["1"]["hd95"] - hd_a) <= 2.5
    assert by_case["b"]["1"] == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}
    assert results["mean_per_class"]["1"]["dice"] == pytest.approx((dice_a + 1) / 2)

    out = tmp_path / "m.json"
    meta = tmp_path / "dataset.json"
    meta.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "spleen": 2}}))
    assert main(["evaluate", "-p", str(pred_dir), "-r", str(ref_dir), "-o", str(out), "--dataset-json", str(meta)]) == 0
    saved = json.loads(out.read_text())
    assert set(saved["mean_per_class"]) == {"liver", "spleen"}
    csv_lines = out.with_suffix(".csv").read_text().splitlines()
    assert csv_lines[0] == "case,class,dice,hd95,nsd" and len(csv_lines) == 1 + 4 + 2 + 1
    assert "liver" in capsys.readouterr().out
    (pred_dir / "b.nii.gz").unlink()  # issue 18: a reference without a prediction is warned about, not fatal
    assert main(["evaluate", "-p", str(pred_dir), "-r", str(ref_dir), "-o", str(out)]) == 0
    assert "b.nii.gz: no prediction in" in capsys.readouterr().err
    assert [c["case"] for c in json.loads(out.read_text())["cases"]] == ["a"]


def test_evaluate_at_size_scores_as_the_original_scores_prostate_beside_the_native_score(tmp_path, capsys):
    """Issue 24: ``--at-size 512`` adds the Dice of both label maps with every slice resized to 512²
    by nearest neighbour (the original's prostate preprocessing, util_script_prostateMRI.py:80-83),
    computed here independently with scipy and a plain Dice; the native score is unchanged."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(0)
    ref = np.zeros((3, 20, 24), np.uint8)
    ref[:, 5:13, 6:17] = 1
    pred = ref.copy()
    pred[rng.random(ref.shape) < 0.15] = 1  # speckle: the two sizes score differently
    for folder, array in (("ref", ref), ("pred", pred)):
        (tmp_path / folder).mkdir()
        write_volume(tmp_path / folder / "case.nii.gz", array, (0.6, 0.5, 3.0))
    out = tmp_path / "m.json"
    args = ["evaluate", "-p", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "-o", str(out), "--at-size", "512"]
    assert main(args) == 0
    results = json.loads(out.read_text())

    def dice(a, b):
        return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())

    big = [zoom(a, (1, 512 / 20, 512 / 24), order=0) for a in (pred, ref)]
    assert results["mean"]["dice"] == pytest.approx(dice(pred == 1, ref == 1))
    assert results["at_size"]["size"] == 512 and big[0].shape == (3, 512, 512)
    assert results["at_size"]["mean"]["dice"] == pytest.approx(dice(big[0] == 1, big[1] == 1))
    assert results["at_size"]["mean"]["dice"] != pytest.approx(results["mean"]["dice"], abs=1e-4)
    assert "resized to 512x512" in capsys.readouterr().out
