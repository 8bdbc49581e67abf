"""Metrics against a brute-force computation: surfaces by erosion, every pairwise distance in mm."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from masam.cli import main
from masam.eval import binary_metrics, evaluate_folders
from tests.data.helpers import write_volume


def brute_force(pred, ref, spacing, tol):
    def surface_mm(mask):
        edge = mask & ~binary_erosion(mask)  # 6-connected erosion, zero outside the image
        return np.argwhere(edge) * np.asarray(spacing)

    sp, sr = surface_mm(pred), surface_mm(ref)
    d = cdist(sp, sr)
    d_pr, d_rp = d.min(1), d.min(0)
    hd95 = max(np.percentile(d_pr, 95), np.percentile(d_rp, 95))
    nsd = ((d_pr <= tol).sum() + (d_rp <= tol).sum()) / (len(d_pr) + len(d_rp))
    dice = 2 * (pred & ref).sum() / (pred.sum() + ref.sum())
    return dice, hd95, nsd


def ellipsoid(shape, centre, radii):
    grid = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.8, 0.7), (0.5, 2.0, 1.25)])
def test_dice_hd95_nsd_match_brute_force(spacing):
    shape = (14, 30, 26)
    ref = ellipsoid(shape, (7, 15, 13), (5, 9, 8))
    pred = ellipsoid(shape, (6.5, 17, 12), (4, 10, 6)) | ellipsoid(shape, (3, 5, 20), (1.5, 2, 2))
    got = binary_metrics(pred, ref, spacing, nsd_tolerance=2.0)
    dice, hd95, nsd = brute_force(pred, ref, spacing, 2.0)
    assert abs(got["dice"] - dice) < 1e-6
    assert abs(got["hd95"] - hd95) <= max(spacing)
    assert abs(got["nsd"] - nsd) < 1e-3


def test_known_geometry_and_empty_conventions():
    ref = np.zeros((10, 10, 10), bool)
    ref[2:6, 2:6, 2:6] = True
    shifted = np.roll(ref, 3, axis=0)  # 3 slices of 2.5 mm: every surface point moves 7.5 mm at most
    m = binary_metrics(shifted, ref, (2.5, 1.0, 1.0), nsd_tolerance=1.0)
    assert m["dice"] == pytest.approx(2 * 16 / 128)  # one 4x4 slice of overlap
    assert m["hd95"] == pytest.approx(7.5)
    empty = np.zeros_like(ref)
    assert binary_metrics(empty, empty, (1, 1, 1)) == {"dice": 1.0, "hd95": 0.0, "nsd": 1.0}
    miss = binary_metrics(empty, ref, (2.0, 1.0, 1.0))
    assert miss["dice"] == 0.0 and miss["nsd"] == 0.0
    assert miss["hd95"] == pytest.approx(np.sqrt(20**2 + 10**2 + 10**2))


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
