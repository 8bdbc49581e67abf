"""Per-case, per-class Dice, HD95 and normalised surface Dice (NSD) in millimetres.

Distances come from MONAI (``compute_hausdorff_distance`` with the 95th percentile, symmetric;
``compute_surface_dice``), with the voxel spacing. Surfaces are the mask voxels that have a
background neighbour (6-connectivity), as in MONAI.

Conventions for empty masks (reference and/or prediction without the class):

============================  ======  =====================================  =====
case                          Dice    HD95                                   NSD
============================  ======  =====================================  =====
both empty                    1       0                                      1
one empty, the other not      0       the image diagonal in mm (worst case)  0
============================  ======  =====================================  =====

The diagonal keeps means finite and ranks a missed or hallucinated structure as the worst
possible distance (the convention of e.g. the BraTS challenge's fixed maximum).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    p, r = pred.astype(bool), ref.astype(bool)
    total = int(p.sum()) + int(r.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, r).sum()) / total


def image_diagonal_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> float:
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def binary_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], nsd_tolerance: float = 2.0) -> dict:
    """Dice, HD95 (mm) and NSD at ``nsd_tolerance`` mm for one class. ``spacing`` is in the
    arrays' axis order (numpy: z, y, x)."""
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    p, r = pred.astype(bool), ref.astype(bool)
    result = {"dice": dice(p, r)}
    if not p.any() and not r.any():
        return {**result, "hd95": 0.0, "nsd": 1.0}
    if not p.any() or not r.any():
        return {**result, "hd95": image_diagonal_mm(p.shape, spacing), "nsd": 0.0}
    yp = torch.from_numpy(p)[None, None]
    yr = torch.from_numpy(r)[None, None]
    sp = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(yp, yr, include_background=True, percentile=95, spacing=sp)
        nsd = compute_surface_dice(yp, yr, [float(nsd_tolerance)], include_background=True, spacing=sp)
    return {**result, "hd95": float(hd.item()), "nsd": float(nsd.item())}


def case_metrics(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], classes: list[int], nsd_tolerance: float = 2.0
) -> dict[int, dict]:
    """``{class: {"dice", "hd95", "nsd"}}`` for label maps of one case."""
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference shape {ref.shape}")
    return {c: binary_metrics(pred == c, ref == c, spacing, nsd_tolerance) for c in classes}
