"""``masam train --dry-run`` (issue 24): the run's settings fully resolved, each with where it came
from (an option given, the preset, the default), and what the trainer derives from them, so that a
run can be compared with the paper's before any work. Reads nothing and writes nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..precision import MIXED
from ..run_folder import RunFolder
from .config import PRESETS, TrainConfig, snapshot_epoch
from .schedule import ADAMW_BETAS

MIXED_PRECISION = "fp16 autocast + GradScaler + TF32 on a CUDA GPU, fp32 on the CPU"


def _shown(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def setting_sources(config: TrainConfig, given: dict[str, Any], preset: str | None) -> dict[str, str]:
    """``{field: "given" | "preset NAME" | "default"}``: the layer each value of ``config`` came
    from (``resolve_train_config``'s order: defaults, then the preset, then the options given)."""
    sources = {}
    for f in dataclasses.fields(config):
        if f.name in given:
            sources[f.name] = "given"
        elif preset and f.name in PRESETS[preset]:
            sources[f.name] = f"preset {preset}"
        else:
            sources[f.name] = "default"
    if config.stop_epoch is None and "iterations" in given and "stop_epoch" not in given:
        sources["stop_epoch"] = "none: --iterations without --epochs"
    return sources


def derived_lines(config: TrainConfig) -> list[str]:
    """What the trainer makes of the settings (the facts that are not settings of their own)."""
    c = config
    stop = f"stop after epoch {c.stop_epoch}" if c.stop_epoch else "no early stop"
    length = f"{c.iterations} steps" if c.iterations else f"{c.epochs} epochs x steps per epoch, {stop}"
    if c.fold is not None:
        split = f"fold {c.fold} of splits_final.json (the dataset's, else one written beside the run folder)"
    elif c.split_file:
        split = f"the cases listed in {c.split_file}"
    elif c.val_fraction == 0:
        split = "every training case, nothing held out"
    else:
        split = f"{c.val_fraction:.0%} of the cases held out (seed {c.seed})"
    epoch, folder = snapshot_epoch(c.predict_with), RunFolder(c.output)
    designated = (folder.snapshot(epoch) if epoch else {"best": folder.best_model, "last": folder.last_model}[
        c.predict_with]).name  # fmt: skip
    every = c.snapshot_every
    snapshots = f"{folder.snapshot('N').name} every {every} epochs and at the last" if every else "none"  # type: ignore[arg-type]
    return [
        f"optimiser: AdamW, betas {ADAMW_BETAS}, weight decay {c.weight_decay}, over the trainable parameters "
        "(FacT, adapters, prompt encoder, mask decoder; SAM's encoder frozen)",
        f"learning rate: {c.lr} / {c.warmup} at step 0, linear to {c.lr} over {c.warmup} warm-up steps, then "
        f"x (1 - (step - {c.warmup}) / max iterations) ^ {c.power}; max iterations = {length}",
        f"loss: {1 - c.dice_weight:.1f} x cross-entropy + {c.dice_weight} x soft Dice"
        + (" (background included)" if c.include_background else " (background left out)"),
        f"batch: {c.batch_size} stacks of {c.slices} slices per step over all processes (a torchrun of N gives "
        f"each {c.batch_size} / N)" + (f", {c.accumulate} micro-batches per step" if c.accumulate > 1 else ""),
        f"device {c.device}, precision {c.precision}: " + (MIXED_PRECISION if c.precision in MIXED else c.precision),
        f"split: {split}; validation " + (f"every {c.val_every} epochs" if c.val_every else "none"),
        f"snapshots: {snapshots}; masam predict -m RUN uses {designated}",
        "augmentation: " + (f"policy {c.augment_policy}" if c.augment else "none (--no-augment)"),
        "decoder head: " + ("re-initialised (mask tokens, hypernetworks, IoU head)" if c.reinit_head
                            else "SAM's where the shapes fit"),  # fmt: skip
        f"labels merged: {c.merge_labels or 'none'}",
    ]


def dry_run_text(config: TrainConfig, given: dict[str, Any], preset: str | None) -> str:
    """Every setting of the run (name, value, source), then the derived facts."""
    sources = setting_sources(config, given, preset)
    values = dataclasses.asdict(config)
    width = max(map(len, values)) + 2
    lines = [f"masam train --dry-run: the run's settings [source: given, preset {preset or '-'}, default]"]
    lines += [f"  {name:<{width}}{_shown(value):<16} [{sources[name]}]" for name, value in values.items()]
    lines += ["what the trainer makes of them:"] + [f"  {line}" for line in derived_lines(config)]
    return "\n".join(lines)
