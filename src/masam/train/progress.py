"""``progress.png``: a run's health at a glance, drawn from its ``log.jsonl``.

Three panels over training steps: the loss with its cross-entropy and Dice terms, the learning
rate, and the validation Dice per class with its mean. The trainer logs two kinds of records
(``{"step", "epoch", "lr", "loss", "ce", "dice", "time_s"}`` per optimiser step and
``{"step", "epoch", "val_dice", "val_dice_<class>"...}`` per validation); any key may be missing,
and a panel without data says so instead of failing. Drawn with matplotlib's Agg canvas (no
display, no global pyplot state), written atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..fileio import atomic_path

LOSS_TERMS = (("loss", "loss", "black"), ("ce", "cross-entropy", "tab:blue"), ("dice", "soft Dice loss", "tab:orange"))
VAL_PREFIX = "val_dice_"


def read_log(path: str | os.PathLike) -> list[dict]:
    """The records of a ``log.jsonl``; lines that are not JSON objects (e.g. the last one cut by a
    crash) are left out."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records


def _series(records: Iterable[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the records holding a finite number under ``key`` and a ``step``."""
    xs, ys = [], []
    for i, r in enumerate(records):
        value = r.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            step = r.get("step", i)
            xs.append(step if isinstance(step, (int, float)) else i)
            ys.append(float(value))
    return np.asarray(xs, float), np.asarray(ys, float)


def _smooth(values: np.ndarray) -> np.ndarray:
    """A trailing mean over about 2% of the points: steps are noisy, the trend is what matters."""
    window = max(1, len(values) // 50)
    if window == 1:
        return values
    sums = np.cumsum(np.insert(values, 0, 0.0))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def _class_label(key: str, class_names: Mapping[int, str] | None) -> str:
    suffix = key[len(VAL_PREFIX) :]
    if suffix.isdigit() and class_names and int(suffix) in class_names:
        return class_names[int(suffix)]
    return suffix


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in the log", ha="center", va="center", transform=ax.transAxes, color="grey")


def _draw_losses(ax, records: list[dict]) -> None:
    drawn = False
    for key, label, colour in LOSS_TERMS:
        x, y = _series(records, key)
        if len(x):
            ax.plot(x, y, color=colour, alpha=0.25, linewidth=0.7)
            ax.plot(x, _smooth(y), color=colour, linewidth=1.5, label=label)
            drawn = True
    if drawn:
        ax.legend(loc="upper right", fontsize="small")
    else:
        _empty(ax, "training loss")
    ax.set_ylabel("training loss")


def _draw_lr(ax, records: list[dict]) -> None:
    x, y = _series(records, "lr")
    if len(x):
        ax.plot(x, y, color="tab:green")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    else:
        _empty(ax, "learning rate")
    ax.set_ylabel("learning rate")


def _draw_validation(ax, records: list[dict], class_names: Mapping[int, str] | None) -> None:
    keys = sorted({k for r in records for k in r if k.startswith(VAL_PREFIX)}, key=lambda k: (len(k), k))
    for key in keys:
        x, y = _series(records, key)
        if len(x):
            ax.plot(x, y, marker="o", markersize=3, linewidth=1, label=_class_label(key, class_names))
    x, y = _series(records, "val_dice")
    if len(x):
        ax.plot(x, y, color="black", marker="o", markersize=4, linewidth=2, label="mean")
    if keys or len(x):
        ax.legend(loc="lower right", fontsize="small", ncol=max(1, (len(keys) + 1) // 8))
        ax.set_ylim(-0.02, 1.02)
    else:
        _empty(ax, "validation Dice")
    ax.set_ylabel("validation Dice")


def plot_progress(
    log_records: Iterable[dict], path: str | os.PathLike, class_names: Mapping[int, str] | None = None
) -> Path:
    """Write the three-panel training curves of ``log_records`` (``log.jsonl`` records, see
    :func:`read_log`) as a PNG at ``path``. ``class_names``: ``{class index: name}`` for
    ``val_dice_<index>`` keys; keys that carry names are shown as they are."""
    records = [r for r in log_records if isinstance(r, dict)]
    figure = Figure(figsize=(8, 9), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(3, 1, sharex=True)
    _draw_losses(axes[0], records)
    _draw_lr(axes[1], records)
    _draw_validation(axes[2], records, class_names)
    axes[2].set_xlabel("step")
    for ax in axes:
        ax.grid(alpha=0.3)
    epochs = [r["epoch"] for r in records if isinstance(r.get("epoch"), (int, float))]
    steps = [r["step"] for r in records if isinstance(r.get("step"), (int, float))]
    where = ([f"epoch {max(epochs)}"] if epochs else []) + ([f"step {max(steps)}"] if steps else [])
    figure.suptitle("training progress" + (f" ({', '.join(where)})" if where else ""))
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path
