"""Metrics against a brute-force computation: surfaces by erosion, every pairwise distance in mm."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion
from scipy.spatial.distance import cdist

from masam.eval.metrics import binary_metrics


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
