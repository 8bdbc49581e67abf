"""Training settings (declared once: default, help and command-line group per field) and presets.

Add a setting: a field with :func:`masam.options.setting`; ``masam train`` gets its flag, and
``--help`` shows its default, in its group."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..allocator import TRAINING_POLICIES
from ..data.config import (
    ct_window_setting,
    merge_labels_setting,
    modality_setting,
    mri_percentile_setting,
    mri_rule_setting,
)
from ..errors import ConfigError
from ..model.config import model_setting
from ..options import check_presets, setting
from ..precision import MIXED, PRECISIONS
from ..run_folder import RunFolder

GROUPS = ("data", "model", "optimisation", "schedule", "runtime")


@dataclass
class TrainConfig:
    # data
    dataset: str = setting(
        "", "dataset folder (nnU-Net raw layout, or video sequences)", "data", short="-d",
        default_text="required, except with --resume",
    )  # fmt: skip
    modality: str | None = modality_setting()
    ct_window: tuple[float, float] = ct_window_setting()
    mri_percentile: float = mri_percentile_setting()
    mri_rule: str = mri_rule_setting()
    val_fraction: float = setting(0.2, "share of cases held out for validation", "data")
    split_file: str | None = setting(None, "JSON {train: [...], val: [...]} instead of a seeded split", "data")
    # issue 16: cross-validation folds in nnU-Net's splits_final.json
    fold: str | None = setting(
        None, "cross-validation fold (0-based) or 'all', from the dataset's splits_final.json, else one written "
        "beside the run folder", "data", default_text="none: --val-fraction split",
    )  # fmt: skip
    num_folds: int = setting(5, "folds of a new splits_final.json", "data")
    augment: bool = setting(True, "switch the training augmentation off", "data", flag="--no-augment")
    box_jitter: float = setting(0.1, "box prompts: each side moved by up to this share of the box", "data")
    # issue 18: a cache written by masam preprocess instead of RUN/cache
    cache: str | None = setting(
        None, "a cache folder written by masam preprocess (used when its plan fits)", "data",
        default_text="RUN/cache, filled here",
    )  # fmt: skip
    # issue 15: masam check before training
    check_dataset: bool = setting(
        True, "skip the dataset check (masam check) that runs first", "data", flag="--no-check-dataset"
    )
    check_processes: int = setting(2, "processes reading cases for the dataset check", "data")
    # model
    sam_checkpoint: str | None = setting(None, "official SAM .pth to fine-tune (arch read from it)", "model")
    arch: str | None = setting(
        None, "vit_b, vit_l, vit_h or vit_tiny; without --sam-checkpoint: randomly initialised", "model",
        default_text="the SAM checkpoint's",
    )  # fmt: skip
    # the model's settings: defaults and help from ModelConfig (model/config.py)
    image_size: int = model_setting("image_size")
    slices: int = model_setting("slices")
    rank: int = model_setting("rank")
    scale: float = model_setting("scale")
    adapter_kernel: int = model_setting("adapter_kernel")
    fact_dropout: float = model_setting("fact_dropout")
    prompt: str = setting(
        "none", "prompt-free, one box per slice, clicks (points), or boxes corrected with clicks (box+points)",
        "model", choices=("none", "box", "points", "box+points"),
    )  # fmt: skip
    # issue 14: which class the boxes are drawn around, and prompt dropout (one model, automatic and prompted)
    box_label: int | None = setting(
        None, "with --prompt box: the class whose boxes are drawn", "model",
        default_text="all foreground (the original's)",
    )
    prompt_dropout: float = setting(
        0.0, "with --prompt box: share of samples trained without a box, so the model also segments unprompted", "model"
    )
    # issue 14: a 3D box or a propagated box reaches slices where the target is smaller or absent
    box_3d: float = setting(
        0.0, "with --prompt box: share of samples whose slices all get the stack's 3D box of the target, "
        "empty slices included, so the model learns loose boxes and boxes with nothing inside", "model",
    )  # fmt: skip
    box_empty: float = setting(
        0.0, "with --prompt box: share of samples without the target that get another sample's box, so the "
        "model learns to find nothing in a box where there is nothing", "model",
    )  # fmt: skip
    # issue 22: training with simulated clicks, SAM's iterative correction
    click_rounds: int = setting(
        3, "with --prompt points or box+points: decoder rounds per stack on one encoding; each round after the "
        "first adds a click at the largest error and gets the last prediction as the mask prompt", "model",
    )  # fmt: skip
    # optimisation
    # issue 24: the global batch, as the original's 3 per GPU x 8 GPUs (train.py:21-22, trainer.py:44)
    batch_size: int = setting(
        24, "stacks per step over all processes: a torchrun of N processes gives each batch-size / N",
        "optimisation",
    )  # fmt: skip
    accumulate: int = setting(1, "micro-batches per optimizer step", "optimisation")
    lr: float = setting(8e-4, "peak learning rate", "optimisation")
    weight_decay: float = setting(0.1, "AdamW weight decay", "optimisation")
    dice_weight: float = setting(0.8, "weight of the Dice loss (cross-entropy: 1 - this)", "optimisation")
    include_background: bool = setting(
        True, "leave the background out of the Dice loss (the original keeps it in)",
        "optimisation", flag="--exclude-background",
    )  # fmt: skip
    precision: str = setting(
        "fp32", "compute precision; fp16 needs CUDA; mixed (the original's; auto is the old name): fp16 + TF32 "
        "on CUDA (bf16 where fp16 is unavailable), fp32 on the CPU", "optimisation", choices=(*PRECISIONS, *MIXED),
    )  # fmt: skip
    grad_checkpoint: bool = setting(False, "recompute encoder blocks in backward (less memory)", "optimisation")
    # schedule
    epochs: int = setting(400, "epochs in the schedule", "schedule")
    stop_epoch: int | None = setting(300, "stop early at this epoch (as the paper)", "schedule")
    iterations: int | None = setting(
        None, "optimizer steps to run instead of epochs", "schedule", default_text="none: run by epochs"
    )
    warmup: int = setting(250, "warm-up steps", "schedule")
    power: float = setting(7.0, "exponent of the polynomial decay", "schedule")
    val_every: int = setting(20, "epochs between validations; 0 = none", "schedule")
    save_every: int = setting(0, "optimizer steps between resumable states; 0 = at the end of each epoch", "schedule")
    # runtime
    output: str = setting("", "run folder for models, state, logs and the cache", "runtime", short="-o", required=True)
    seed: int = setting(1234, "random seed", "runtime")
    workers: int | None = setting(
        None, "data-loader workers per process", "runtime", default_text="2, at most the cores this process may use "
        "less one (issue 28: no oversubscribed shared CPU)",
    )  # fmt: skip
    device: str = setting("auto", "cpu, cuda or auto (CUDA when PyTorch sees a GPU, else the CPU)", "runtime")
    host_allocator: str = setting(
        "auto",
        "host memory policy: lean returns large blocks to the system (less memory, slower), reuse keeps them "
        "(faster), lean-forward is lean in the forward pass only; auto: lean with --grad-checkpoint, else "
        "lean-forward",
        "runtime",
        choices=("auto", *TRAINING_POLICIES),
    )
    resume: bool = setting(False, "continue the run in --output", "runtime")
    # issue 12: the original's recipe (see docs/fidelity.md)
    # issue 27: masam's own policy by default (measured on real data, docs/learning.md); the paper's
    # presets keep the original's, op for op
    augment_policy: str = setting(
        "masam", "augmentation set: masam (measured best when training from scratch, docs/learning.md), the "
        "original's (original), or its box-task variant original-box (no erasing, no geometric RandAugment ops)",
        "data", choices=("masam", "original", "original-box"),
    )  # fmt: skip
    box_per: str = setting(
        "slice", "box prompts: one per slice, or slice 0's box for every slice of the stack (the original's)",
        "data", choices=("slice", "stack"),
    )  # fmt: skip
    merge_labels: str | None = merge_labels_setting()
    # issue 24: the network sees the original's orientation in training and prediction (the presets)
    orientation: str = setting(
        "masam", "in-plane orientation of the slices the network sees: masam's (SimpleITK's [y, x]) or the "
        "original's (turned 180°, video frames anti-transposed), stored in the model's input spec", "data",
        choices=("masam", "original"),
    )  # fmt: skip
    # issue 24: the original's loader scales every stack by its own range (datasets/dataset.py:378)
    stack_minmax: bool = setting(
        False, "scale each stack to [0, 1] by its own minimum and maximum after the normalisation, in training "
        "and prediction (the original's loader, for every dataset)", "data",
    )  # fmt: skip
    snapshot_every: int = setting(0, "epochs between snapshots model_epoch_N.safetensors; 0 = none", "schedule")
    # issue 24: any kept snapshot (the original's test.py loads epoch_159.pth, our model_epoch_160)
    predict_with: str = setting(
        "best", "the model the run folder designates for masam predict: best, last, or epoch:N (the snapshot "
        "model_epoch_N.safetensors kept by --snapshot-every)", "schedule", metavar="{best,last,epoch:N}",
    )  # fmt: skip
    reinit_head: bool = setting(
        False, "re-initialise the decoder's mask tokens, hypernetworks and IoU head even where SAM's fit (the "
        "original's)", "model",
    )  # fmt: skip
    # issue 17: parallel preprocessing of the cache
    preprocess_processes: int = setting(
        1, "cases preprocessed at once into the cache, each in a process", "runtime", flag="--processes"
    )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {"mri_rule": "percentile", **values}  # a run folder written before issue 27
        out = cls(**{k: v for k, v in values.items() if k in known})
        out.ct_window = tuple(out.ct_window)
        if out.augment_policy is None:  # a run folder written before issue 27 chose by the prompt
            out.augment_policy = "original-box" if out.prompt == "box" else "original"
        return out


# Named partial settings, applied over the defaults and under what is given on the command line.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "batch_size": 24,
        "image_size": 512,
        "slices": 5,
        "lr": 8e-4,
        "warmup": 250,
        "power": 7.0,
        "epochs": 400,
        "stop_epoch": 300,
        "rank": 32,
        "scale": 1.0,
        "weight_decay": 0.1,
        "dice_weight": 0.8,
        # the original's protocol (issue 12): every training case, no validation, a snapshot every
        # 20 epochs, the last model, mixed precision on CUDA, the decoder head always re-initialised
        "val_fraction": 0.0,
        "val_every": 0,
        "snapshot_every": 20,
        "predict_with": "last",
        "precision": "mixed",
        "reinit_head": True,
        "augment_policy": "original",
        "mri_rule": "percentile",
        "stack_minmax": True,  # issue 24: the released loader's last step, prostate included
        "orientation": "original",  # issue 24: the network sees what the original's loader gives
    },
}
# the paper's four tasks (docs/fidelity.md): the paper's protocol plus each task's data settings
PRESETS["btcv"] = {**PRESETS["paper"], "merge_labels": "13:12", "ct_window": (-200.0, 250.0)}
PRESETS["prostate"] = {**PRESETS["paper"], "modality": "MRI", "mri_percentile": 99.0}
# the released loader cannot take the video stacks ([h, w, 3, 5]); frames span 0..255 anyway
PRESETS["endovis"] = {**PRESETS["paper"], "modality": "RGB", "stack_minmax": False}
PRESETS["tumour-box"] = {
    **PRESETS["paper"], "ct_window": (-50.0, 200.0), "prompt": "box", "augment_policy": "original-box",
    "box_per": "stack", "box_jitter": 0.0,
}  # fmt: skip
# issue 18: the from-scratch recipe of ``masam demo`` (no SAM checkpoint): a higher lr with a linear
# decay, a short warm-up, the background left out of the Dice loss, a small rank and batch
PRESETS["scratch"] = {
    "image_size": 128,
    "rank": 8,
    "batch_size": 4,
    "lr": 1e-3,
    "warmup": 20,
    "power": 1.0,
    "include_background": False,
    "augment": False,  # the original's augmentation slows a short run from scratch (demo: Dice 0.89 without)
}
check_presets(TrainConfig, PRESETS)
PAPER_PRESET = PRESETS["paper"]


@dataclass
class TrainSession:
    """Options of one ``masam train`` command that are not part of the run's settings."""

    preset: str | None = setting(
        None, "named settings applied under the options given (masam.train.PRESETS)", "runtime", choices=tuple(PRESETS)
    )
    stop_after: int | None = setting(None, "save a resumable state and stop after N steps of this run", "runtime")
    check_sync: bool = setting(False, "(debugging) verify that all ranks hold the same weights", "runtime")
    quiet: bool = setting(False, "no progress bar", "runtime")
    # issue 24: compare a run with the paper's before spending a GPU-day
    dry_run: bool = setting(
        False, "print the resolved settings, where each came from (given, preset, default), and what the trainer "
        "derives from them; then exit without reading or writing anything", "runtime",
    )  # fmt: skip


def resolve_train_config(given: dict[str, Any], preset: str | None = None) -> TrainConfig:
    """The run's settings: defaults, then the preset, then the options given. ``--iterations``
    without ``--epochs`` runs by steps alone (no early stop epoch)."""
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    values = TrainConfig().to_dict()
    values.update(PRESETS[preset] if preset else {})
    values.update(given)
    if not values["dataset"]:
        raise ConfigError("give the dataset folder (-d), or --resume to continue the run in --output")
    if given.get("iterations") is not None and "epochs" not in given:
        values["stop_epoch"] = None
    if values["sam_checkpoint"] is None and values["arch"] is None:
        raise ConfigError("give --sam-checkpoint (fine-tune SAM) or --arch (train from random initialisation)")
    config = TrainConfig.from_dict(values)
    check_prompt_settings(config)
    check_predict_with(config)
    return config


def snapshot_epoch(predict_with: str) -> int | None:
    """N of ``epoch:N``, None for ``best`` and ``last``; ConfigError for anything else."""
    if predict_with in ("best", "last"):
        return None
    kind, _, number = predict_with.partition(":")
    if kind != "epoch" or not number.isdigit() or int(number) < 1:
        raise ConfigError(f"--predict-with must be best, last or epoch:N (N >= 1), got {predict_with!r}")
    return int(number)


def check_predict_with(config: TrainConfig) -> None:
    """``--predict-with epoch:N`` names a snapshot the run keeps: every ``--snapshot-every`` epochs
    and at the last epoch."""
    epoch = snapshot_epoch(config.predict_with)
    if epoch is None:
        return
    every = config.snapshot_every
    last = None if config.iterations else min(config.epochs, config.stop_epoch or config.epochs)
    if not every or (epoch % every and epoch != last) or (last is not None and epoch > last):
        kept = f"every {every} epochs and at the last ({last})" if every else "none (--snapshot-every 0)"
        raise ConfigError(f"--predict-with {config.predict_with}: the run keeps no such snapshot; it keeps {kept}")


def check_prompt_settings(config: TrainConfig) -> None:
    """``--box-label`` and ``--prompt-dropout`` need a prompt, ``--box-3d`` and ``--box-empty`` a box
    (issue 14), ``--click-rounds`` a round at least (issue 22); and sensible values."""
    if config.prompt == "none" and (config.box_label is not None or config.prompt_dropout > 0):
        raise ConfigError("--box-label and --prompt-dropout need --prompt box, points or box+points")
    if "box" not in config.prompt and (config.box_3d > 0 or config.box_empty > 0):
        raise ConfigError("--box-3d and --box-empty need --prompt box or box+points")
    if "points" in config.prompt and config.click_rounds < 1:
        raise ConfigError(f"--click-rounds must be 1 or more, got {config.click_rounds}")
    if not 0.0 <= config.prompt_dropout < 1.0:
        raise ConfigError(f"--prompt-dropout must be at least 0 and below 1, got {config.prompt_dropout}")
    for flag, share in (("--box-3d", config.box_3d), ("--box-empty", config.box_empty)):
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"{flag} must be between 0 and 1, got {share}")
    if config.box_label is not None and config.box_label < 1:
        raise ConfigError(f"--box-label must be a foreground class (1 or more), got {config.box_label}")




# issue 18: settings that may change when a run is resumed; any other option must agree with config.json
# preprocess_processes only changes how fast a missing cache is filled, never what is in it
RESUME_MAY_CHANGE = (
    "iterations", "epochs", "workers", "device", "val_every", "resume", "output", "preprocess_processes",
)


def resume_train_config(given: dict[str, Any], preset: str | None = None) -> TrainConfig:
    """The settings of a resumed run: those saved in ``OUTPUT/config.json``, with the few that may
    change (:data:`RESUME_MAY_CHANGE`) taken from ``given``. Every other given option (and the
    preset's values) must equal the saved one; all that differ are listed in one error. Reads only.
    A run folder without ``config.json`` (killed before it was written) starts anew when the
    dataset is given, and is an error otherwise."""
    path = RunFolder(given["output"]).config_file
    try:
        saved = json.loads(path.read_text())["train"]
    except FileNotFoundError:
        if given.get("dataset"):  # a run stopped before it wrote anything: it starts, as nnU-Net's --c does
            return resolve_train_config(given, preset)
        raise ConfigError(f"{path}: no such file; nothing to resume (train without --resume first)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"{path}: cannot read the run's settings: {err}") from None
    stored = TrainConfig.from_dict({**TrainConfig().to_dict(), **saved}).to_dict()
    asked = {**(PRESETS[preset] if preset else {}), **given}
    differ = [
        f"--{k.replace('_', '-')} {_shown(v)} (run: {_shown(stored[k])})"
        for k, v in asked.items()
        if k not in RESUME_MAY_CHANGE and k in stored and _normal(k, v) != _normal(k, stored[k])
    ]
    if differ:
        raise ConfigError(f"{path.parent}: options differ from the run's settings: {'; '.join(differ)}")
    stored.update({k: v for k, v in given.items() if k in RESUME_MAY_CHANGE}, resume=True)
    if given.get("iterations") is not None and "epochs" not in given:
        stored["stop_epoch"] = None
    return TrainConfig.from_dict(stored)


def _normal(key: str, value: Any) -> Any:
    """Values as stored in JSON (tuples as lists), file names as absolute paths, one name for the
    mixed precision (a run written before issue 25 stores ``auto``)."""
    if key == "precision" and value in MIXED:
        return MIXED[0]
    if isinstance(value, (tuple, list)):
        return [_normal(key, v) for v in value]
    if key in ("dataset", "split_file", "sam_checkpoint") and value:
        return str(Path(value).absolute())
    return value


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
