"""Evaluating a folder of predictions against a folder of references."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..data.io import read_label, read_volume, scan_cases
from ..data.labels import merge_labels
from ..errors import ImageReadError, MissingFileError
from ..fileio import atomic_path
from .metrics import case_metrics

METRICS = ("dice", "hd95", "nsd")


def evaluate_folders(
    pred_dir: str | os.PathLike,
    ref_dir: str | os.PathLike,
    classes: list[int] | None = None,
    class_names: dict[int, str] | None = None,
    nsd_tolerance: float = 2.0,
    label_map: dict[int, int] | None = None,
    warn: Callable[[str], None] | None = None,
    at_size: int | None = None,
) -> dict:
    """Per case and per class metrics, per-class means and the overall mean.

    Cases are matched by name (``CASE.nii.gz`` etc.); a reference without a prediction, or a
    prediction without a reference, is warned about and left out (none matched: an error).
    ``classes`` default: every foreground value found in the references. ``label_map``:
    label values merged in both (``--merge-labels``, e.g. ``{13: 12}``). ``warn`` (default:
    a line on stderr) gets one line per doubtful case: a prediction without a reference, labels in a
    reference or prediction that are not evaluated. ``at_size`` (issue 24): the same scores again,
    under ``"at_size"``, with every slice of both label maps resized to ``at_size`` squared (nearest),
    as the original scores prostate on volumes resized to 512² (util_script_prostateMRI.py:80-83).
    """
    warn = warn or _warn_stderr
    preds, refs = scan_cases(pred_dir, channel_suffix=False), scan_cases(ref_dir, channel_suffix=False)
    if "overlays" not in refs:  # masam predict --overlays' own drawings, not a video prediction
        preds.pop("overlays", None)
    if not refs:
        raise MissingFileError(f"{ref_dir}: no label files")
    if not set(refs) & set(preds):
        raise MissingFileError(f"{pred_dir}: no prediction for any reference in {ref_dir}")
    for missing in sorted(set(refs) - set(preds)):
        warn(f"{refs[missing]}: no prediction in {pred_dir}; not evaluated")
    for extra in sorted(set(preds) - set(refs)):
        warn(f"{preds[extra]}: no reference in {ref_dir}; not evaluated")
    loaded = {}
    for name, ref_path in ((n, p) for n, p in refs.items() if n in preds):
        ref = read_volume(ref_path) if ref_path.is_file() else None
        ref_label = read_label(ref_path)
        pred_label = read_label(preds[name])
        if pred_label.array.shape != ref_label.array.shape:
            raise ImageReadError(
                f"{preds[name]}: shape {list(pred_label.array.shape)} differs from the reference's "
                f"{list(ref_label.array.shape)}"
            )
        spacing = tuple(reversed(ref.spacing)) if ref is not None else (1.0, 1.0, 1.0)
        merge = label_map or {}
        loaded[name] = (merge_labels(pred_label.array, merge), merge_labels(ref_label.array, merge), spacing)
    if classes is None:
        classes = sorted({int(v) for _, r, _ in loaded.values() for v in np.unique(r) if v > 0})
    names = {c: (class_names or {}).get(c, str(c)) for c in classes}
    _warn_unevaluated(loaded, classes, warn)
    results = {"nsd_tolerance_mm": nsd_tolerance, **_scores(loaded, classes, names, nsd_tolerance)}
    if at_size is not None:
        resized = {name: _at_size(*item, at_size) for name, item in loaded.items()}
        results["at_size"] = {"size": at_size, **_scores(resized, classes, names, nsd_tolerance)}
    return results


def _scores(loaded: dict, classes: list[int], names: dict[int, str], nsd_tolerance: float) -> dict:
    """``cases``, ``mean_per_class`` and ``mean`` of ``{case: (pred, ref, spacing)}``."""
    cases = []
    for name, (pred, ref, spacing) in loaded.items():
        per_class = case_metrics(pred, ref, spacing, classes, nsd_tolerance)
        cases.append({"case": name, "classes": {names[c]: per_class[c] for c in classes}})
    means = {
        names[c]: {m: float(np.mean([row["classes"][names[c]][m] for row in cases])) for m in METRICS} for c in classes
    }
    overall = {m: float(np.mean([v[m] for v in means.values()])) for m in METRICS}
    return {"cases": cases, "mean_per_class": means, "mean": overall}


def _at_size(pred: np.ndarray, ref: np.ndarray, spacing: tuple, size: int) -> tuple:
    """Both label maps ``[z, y, x]`` with every slice resized to ``size`` squared by nearest
    neighbour (scipy ``zoom(order=0)``, as the original), the in-plane spacing scaled to match."""
    from scipy.ndimage import zoom

    h, w = ref.shape[1:]
    factors = (1.0, size / h, size / w)
    scaled = (spacing[0], spacing[1] * h / size, spacing[2] * w / size)
    return zoom(pred, factors, order=0), zoom(ref, factors, order=0), scaled


def _warn_stderr(message: str) -> None:
    print(f"masam evaluate: warning: {message}", file=sys.stderr)


def _warn_unevaluated(loaded: dict, classes: list[int], warn: Callable[[str], None]) -> None:
    """One line per case whose reference or prediction holds labels outside ``classes`` (issue 18:
    a liver class scored against a reference where 3 is another organ must not pass in silence)."""
    evaluated = set(classes) | {0}
    for name, (pred, ref, _) in loaded.items():
        for what, array in (("reference", ref), ("prediction", pred)):
            other = sorted({int(v) for v in np.unique(array)} - evaluated)
            if other:
                shown = ", ".join(map(str, other[:10])) + (" ..." if len(other) > 10 else "")
                warn(f"{name}: {what} holds labels {shown} that are not evaluated (classes {classes})")


def write_results(results: dict, json_path: str | os.PathLike) -> tuple[Path, Path]:
    """JSON as given and a CSV (one row per case and class, then the means) beside it."""
    json_path = Path(json_path)
    csv_path = json_path.with_suffix(".csv")
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(results, indent=1))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["case", "class", *METRICS])
    for row in results["cases"]:
        for cls, values in row["classes"].items():
            writer.writerow([row["case"], cls, *(f"{values[m]:.6f}" for m in METRICS)])
    for cls, values in results["mean_per_class"].items():
        writer.writerow(["mean", cls, *(f"{values[m]:.6f}" for m in METRICS)])
    writer.writerow(["mean", "all", *(f"{results['mean'][m]:.6f}" for m in METRICS)])
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buffer.getvalue())
    return json_path, csv_path


def format_table(results: dict) -> str:
    lines = [f"{'class':<20}{'Dice':>8}{'HD95 mm':>10}{'NSD':>8}"]
    for cls, v in results["mean_per_class"].items():
        lines.append(f"{cls:<20}{v['dice']:>8.4f}{v['hd95']:>10.2f}{v['nsd']:>8.4f}")
    m = results["mean"]
    lines.append(f"{'mean':<20}{m['dice']:>8.4f}{m['hd95']:>10.2f}{m['nsd']:>8.4f}")
    if "at_size" in results:
        size, dice = results["at_size"]["size"], results["at_size"]["mean"]["dice"]
        lines.append(f"mean Dice, every slice resized to {size}x{size} (the original's prostate scoring): {dice:.4f}")
    return "\n".join(lines)
