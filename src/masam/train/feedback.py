"""What ``masam train`` tells its user (issue 18): a start summary, one line per validation with
the Dice of each class by name, and an end table read back from ``log.jsonl`` (so that it also
covers the validations of earlier, resumed parts of the run)."""

from __future__ import annotations

import json
from pathlib import Path

from ..run_folder import RunFolder

VAL_PREFIX = "val_dice_"


def start_summary(train: list[str], held_out: list[str], steps: tuple[int, int], device: str, params: tuple) -> str:
    """``steps``: (first step of this run, last step); ``params``: (trainable, total)."""
    def names(cases: list[str]) -> str:
        shown = ", ".join(cases[:6]) + (f", ... ({len(cases)} in all)" if len(cases) > 6 else "")
        return f"{len(cases)} case(s)" + (f": {shown}" if cases else "")

    first, last = steps
    begin = f"steps {first + 1} to {last}" if first else f"{last} steps"
    return "\n".join([
        f"training on {names(train)}",
        f"held out for validation: {names(held_out)}",
        f"{begin} on {device}; {params[0]:,} trainable parameters of {params[1]:,}",
    ])  # fmt: skip


def validation_line(metrics: dict) -> str:
    """One line: epoch, step, mean Dice and the Dice of each class by name."""
    classes = {k.removeprefix(VAL_PREFIX): v for k, v in metrics.items() if k.startswith(VAL_PREFIX)}
    per_class = ", ".join(f"{name} {value:.3f}" for name, value in classes.items())
    where = f"epoch {metrics['epoch']}, step {metrics['step']}"
    return f"validation at {where}: Dice {metrics['val_dice']:.3f} ({per_class})"


def _validations(run_dir: Path) -> list[dict]:
    path = RunFolder(run_dir).log_file
    records = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(record, dict) and "val_dice" in record:
            records.append(record)
    return records


def end_summary(run_dir: str | Path, steps: int) -> str:
    """The end table: best and last validation Dice per class, where the models are, how to view the curves."""
    run_dir = Path(run_dir)
    lines = [f"finished after {steps} steps; run folder {run_dir}"]
    records = _validations(run_dir)
    if records:
        best, last = max(records, key=lambda r: r["val_dice"]), records[-1]
        lines.append(f"{'validation Dice':<24}{'best (step ' + str(best['step']) + ')':>18}{'last':>10}")
        keys = ["val_dice"] + [k for k in last if k.startswith(VAL_PREFIX)]
        for key in keys:
            name = "mean" if key == "val_dice" else key.removeprefix(VAL_PREFIX)
            lines.append(f"  {name:<22}{best.get(key, float('nan')):>18.3f}{last[key]:>10.3f}")
    else:
        lines.append("no validation ran (no held-out cases, or --val-every 0)")
    run = RunFolder(run_dir)
    lines.append(f"best model: {run.best_model}")
    lines.append(f"last model: {run.last_model}")
    lines.append(f"curves:     tensorboard --logdir {run.tensorboard_dir}  (or masam.train.progress.plot_progress)")
    return "\n".join(lines)
