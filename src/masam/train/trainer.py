"""``masam train``: the paper's recipe with exact resume, validation and DistributedDataParallel.

The :class:`Trainer` is made of steps, as nnU-Net's trainer is made of hooks: :meth:`Trainer.setup`
(processes, data, model, optimiser, resume), :meth:`Trainer.train_step` (one micro-batch; the
metrics when an optimiser step completes), :meth:`Trainer.on_step_end` and
:meth:`Trainer.on_epoch_end`, :meth:`Trainer.save_checkpoint` and :meth:`Trainer.validate`.

Run folder: ``config.json``, ``model_last.safetensors``, ``model_best.safetensors``,
``training_state.pt`` (everything needed to continue bit for bit: trainable weights, optimiser,
gradient scaler, epoch and position in the epoch's data order, RNG states), ``log.jsonl``,
``tensorboard/`` and ``cache/`` (the preprocessed dataset). Every file is written to a temporary
name and renamed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from ..allocator import configure_allocator, training_policy
from ..data import (
    ChannelNormalization,
    Normalization,
    StackAugmenter,
    StackDataset,
    load_dataset,
    preprocess_dataset,
    split_cases,
)
from ..data.augment import AugmentConfig
from ..data.intensity import intensity_summary
from ..data.io import read_label
from ..data.labels import label_map_from_text, merged_names
from ..data.normalize import spec_for
from ..data.preprocess import cache_plan, check_cache, dataset_normalization
from ..data.slices import boxes_from_mask
from ..data.splits import fold_cases, make_folds, read_splits, write_splits
from ..device import resolve_device
from ..errors import ConfigError, TrainingError
from ..eval.metrics import dice
from ..fileio import atomic_path
from ..infer.predict_files import predict_cases
from ..infer.predictor import Predictor
from ..model.checkpoint import load_model, save_weights
from ..model.config import model_settings_of
from ..model.sam_format import reinit_decoder_head
from ..precision import MIXED, PRECISIONS, allow_tf32, resolve_training_precision
from ..run_folder import SPLITS, CacheFolder, RunFolder
from ..threads import loader_workers
from .clicks import SimulatedClicks
from .config import TrainConfig
from .feedback import start_summary, validation_line
from .losses import segmentation_loss
from .preflight import check_before_work
from .progress import plot_progress, read_log
from .prompting import box_target, prompt_keep, prompt_metadata
from .schedule import ADAMW_BETAS, EpochSampler, lr_at
from .state import rng_state, set_rng_state

__all__ = ["EpochSampler", "Interrupted", "Trainer", "TrainingError", "boxes_for_training", "lr_at", "training_loss"]


class Interrupted(Exception):
    """Raised after a resumable state was saved on SIGTERM / SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class _StopRun(Exception):
    """Internal: the run ends early with this result (``--stop-after``)."""

    def __init__(self, result: dict) -> None:
        super().__init__("stop")
        self.result = result


def boxes_for_training(label: torch.Tensor, generator: torch.Generator, jitter: float) -> torch.Tensor:
    """One box per slice around all foreground, each side moved by a uniform random amount of up
    to ``jitter`` times the box's side (at least 1 pixel), clipped to the image; NaN where a slice
    has no foreground. ``label`` ``[B, D, H, W]`` -> ``[B, D, 4]`` (x0, y0, x1, y1)."""
    b, d, h, w = label.shape
    boxes = torch.full((b, d, 4), float("nan"))
    for i in range(b):
        for j, tight in enumerate(boxes_from_mask((label[i] > 0).numpy())):
            if np.isnan(tight).any():
                continue
            x0, y0, x1, y1 = tight.tolist()
            sx, sy = max(1.0, jitter * (x1 - x0 + 1)), max(1.0, jitter * (y1 - y0 + 1))
            noise = (torch.rand(4, generator=generator) * 2 - 1) * torch.tensor([sx, sy, sx, sy])
            box = torch.tensor([x0, y0, x1, y1], dtype=torch.float32) + noise
            box[0::2] = box[0::2].clamp(0, w - 1)
            box[1::2] = box[1::2].clamp(0, h - 1)
            boxes[i, j] = box
    return boxes


def with_stack_boxes(
    boxes: torch.Tensor, target: torch.Tensor, share: float, jitter: float, generator: torch.Generator
) -> torch.Tensor:
    """``boxes`` ``[B, D, 4]`` with a share ``share`` of the samples prompted the way a 3D box prompts
    at prediction: every slice gets the same box, the jittered bounding box of ``target``
    ``[B, D, H, W]`` over the whole stack, also where a slice holds less of the target or none.
    Samples without the target keep their (NaN) boxes."""
    whole = boxes_for_training(target.amax(1, keepdim=True), generator, jitter)  # [B, 1, 4]
    chosen = torch.rand(boxes.shape[0], generator=generator) < share
    return torch.where(chosen[:, None, None], whole.expand_as(boxes), boxes)


def with_empty_boxes(
    boxes: torch.Tensor, target: torch.Tensor, share: float, jitter: float, generator: torch.Generator
) -> torch.Tensor:
    """``boxes`` ``[B, D, 4]`` where each sample without ``target`` ``[B, D, H, W]`` gets, with
    probability ``share``, the stack box (:func:`with_stack_boxes`) of a random sample that has
    it, on every slice: a box with nothing inside, which a propagated box meets past the target's
    end. Unchanged where no sample of the batch has the target."""
    whole = boxes_for_training(target.amax(1, keepdim=True), generator, jitter)[:, 0]  # [B, 4]
    has = whole.isfinite().all(1)
    donors = has.nonzero().flatten()
    chosen = ~has & (torch.rand(boxes.shape[0], generator=generator) < share)
    if len(donors) == 0:
        return boxes
    borrowed = whole[donors[torch.randint(len(donors), (boxes.shape[0],), generator=generator)]]
    return torch.where(chosen[:, None, None], borrowed[:, None].expand_as(boxes), boxes)


def training_loss(
    net: torch.nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
    boxes: torch.Tensor | None,
    dtype: torch.dtype | None,
    dice_weight: float = 0.8,
    include_background: bool = True,
    reduce_sums=None,
    prompted: torch.Tensor | None = None,
    clicks=None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, CE, Dice) of one micro-batch: the forward pass under autocast to ``dtype`` (None:
    float32), the loss in float32. ``image`` ``[B, D, 3, S, S]``, ``label`` ``[B, D, S, S]``;
    ``prompted`` ``[B]`` bool: samples that keep their prompts (None: all); ``clicks``: simulated
    clicks (:class:`masam.train.clicks.SimulatedClicks`), whose every round is in the loss (the
    mean over the rounds)."""
    with torch.autocast(image.device.type, dtype=dtype, enabled=dtype is not None):
        if clicks is not None:
            out = net(image, boxes, prompted, clicks)
        else:
            out = net(image, boxes) if prompted is None else net(image, boxes, prompted)
    rounds = out.get("rounds") or [out["logits"]]
    losses = [segmentation_loss(r.float(), label, dice_weight, include_background, reduce_sums) for r in rounds]
    return tuple(torch.stack(parts).mean() for parts in zip(*losses, strict=True))


def process_batch(batch_size: int, world: int) -> int:
    """Each process's share of the global ``--batch-size`` over ``world`` processes (issue 24: the
    presets' 24 is the original's 3 per GPU x 8 GPUs); refused where it does not divide."""
    if batch_size < 1 or batch_size % world:
        raise ConfigError(
            f"--batch-size {batch_size} is the global batch and must divide evenly over the {world} processes "
            f"of this run; give a multiple of {world} (e.g. {max(1, round(batch_size / world)) * world})"
        )
    return batch_size // world


class Trainer:
    """One training run; every attribute is created here and filled in by :meth:`setup`."""

    def __init__(
        self, config: TrainConfig, *, progress: bool = True, stop_after: int | None = None, check_sync: bool = False
    ):
        self.cfg = config
        self.progress = progress
        self.stop_after = stop_after  # optimizer steps in this run, then save and stop (time-boxed jobs)
        self.check_sync = check_sync
        self.signal_received: int | None = None
        self.folder = RunFolder(config.output)  # every file name of the run folder
        self.run_dir = self.folder.path
        # processes
        self.world, self.ddp_rank, self.distributed = 1, 0, False
        self.batch = config.batch_size  # this process's share of the global batch (setup)
        self.device = torch.device("cpu")
        # data
        self.dataset = None
        self.normalization: Normalization | ChannelNormalization | None = None
        self.val_cases: list = []
        self.train_set: StackDataset | None = None
        # model and optimisation
        self.model = None
        self.net: torch.nn.Module | None = None  # the model, or its DDP wrapper
        self.trainable_names: set[str] = set()
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.reduce_sums = None
        self.dtype: torch.dtype | None = None
        self.precision = config.precision  # resolved by setup ("mixed" -> fp16, bf16 or fp32)
        self.label_map: dict[int, int] = {}
        self.host_memory: tuple[str, str] = ("reuse", "reuse")  # allocator modes: forward, backward
        # where the run is
        self.epoch, self.batch_in_epoch, self.step, self.best = 0, 0, 0, -1.0
        self.batches_per_epoch, self.total_steps, self.stop_steps = 0, 0, 0
        self.warmup = config.warmup  # clipped to the run's length in setup
        self.steps_this_run, self.pending = 0, 0
        self.sums = _zero_sums()
        self.resumed = False
        self.started = 0.0
        self.writer = None
        self.bar = None

    @property
    def is_main(self) -> bool:
        return self.ddp_rank == 0

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Everything before the first step; nothing is written before the settings and files are
        checked, and a run folder this call created is removed again when set-up fails."""
        self._setup_processes()
        if self.folder.state_file.is_file() and not self.cfg.resume:
            raise TrainingError(f"{self.run_dir}: holds a training state; use --resume to continue or another folder")
        check_before_work(self.cfg, dataset=not self.cfg.resume)
        created = not self.run_dir.exists()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._setup_data()
            self._setup_model()
            self._setup_optimiser()
            self.resumed = self._load_state() if self.cfg.resume else False
            self._write_config()
        except BaseException:
            if created and self.is_main:
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise
        self._open_writer()
        self._plan_steps()
        self._clip_warmup()
        self._start_summary()

    def _setup_processes(self) -> None:
        cfg = self.cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.ddp_rank = int(os.environ.get("RANK", "0"))
        self.distributed = self.world > 1
        self.batch = process_batch(cfg.batch_size, self.world)
        device = resolve_device(cfg.device)
        if device.type == "cuda" and self.distributed:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        self.device = device
        self.precision = resolve_training_precision(cfg.precision, device)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
        if cfg.precision in MIXED and device.type == "cuda":
            allow_tf32()
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if self.precision == "fp16" and device.type != "cuda":
            raise ConfigError("fp16 training needs a CUDA GPU; use --precision bf16 or fp32 on the CPU")
        self.dtype = PRECISIONS[self.precision]
        self.host_memory = training_policy(cfg.host_allocator, cfg.grad_checkpoint)

    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _setup_data(self) -> None:
        cfg = self.cfg
        self.dataset = load_dataset(cfg.dataset, modality=cfg.modality)
        self.label_map = label_map_from_text(cfg.merge_labels)
        if self.label_map:
            self.dataset = dataclasses.replace(self.dataset, labels=merged_names(self.dataset.labels, self.label_map))
        self.normalization = dataset_normalization(
            self.dataset, cfg.ct_window, cfg.mri_percentile, cfg.mri_rule, cfg.stack_minmax
        )
        if cfg.fold is not None:
            train_cases, self.val_cases = self._fold_split()
        else:
            train_cases, self.val_cases = split_cases(
                self.dataset.training, cfg.val_fraction, cfg.seed, cfg.split_file
            )
        cache = self.folder.cache(cfg.cache).path
        if cfg.cache:
            plan = cache_plan(self.dataset, cfg.image_size, self.normalization, self.label_map)
            check_cache(cache, plan, [c.name for c in self.dataset.training])
        elif self.is_main:
            preprocess_dataset(
                self.dataset, cache, cfg.image_size, self.normalization, self.progress, cfg.preprocess_processes,
                self.label_map,
            )
        self._barrier()
        augment = StackAugmenter(AugmentConfig(policy=cfg.augment_policy)) if cfg.augment else None
        self.train_set = StackDataset(
            cache, [c.name for c in train_cases], cfg.slices, augment, cfg.seed, cfg.stack_minmax, cfg.orientation
        )

    def _fold_split(self) -> tuple[list, list]:
        """(train, val) cases of ``--fold``: the dataset's ``splits_final.json``, else the one beside
        the run folder (written with nnU-Net's seed on first use, so every fold's run shares it)."""
        cases = {c.name: c for c in self.dataset.training}
        path = Path(self.cfg.dataset) / SPLITS  # nnU-Net's place: the dataset's own folds
        if not path.is_file():
            path = self.folder.shared_splits_file
            if self.is_main and not path.is_file():
                try:
                    write_splits(path, make_folds(cases, self.cfg.num_folds))
                except ValueError as err:
                    fewer = f"; choose fewer folds, e.g. --num-folds {len(cases)}" if len(cases) >= 2 else ""
                    raise ConfigError(f"{self.cfg.dataset}: {err}{fewer}") from None
            self._barrier()
        try:
            train, val = fold_cases(read_splits(path), self.cfg.fold, known=cases)
        except ValueError as err:  # a fold the split lacks
            raise ConfigError(f"{path}: {err}") from None
        return [cases[n] for n in train], [cases[n] for n in val]

    def _setup_model(self) -> None:
        """The model through :func:`load_model` (an arch other than the SAM file's is refused), with
        the input spec that prediction will read back."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        model = load_model(
            cfg.sam_checkpoint, arch=cfg.arch, num_classes=self.dataset.num_classes, device=self.device,
            label_names=self.dataset.labels, **model_settings_of(cfg),
        )  # fmt: skip
        if cfg.reinit_head:
            reinit_decoder_head(model)
        spec = spec_for(self.normalization, self.dataset.channel_names, cfg.slices, cfg.image_size)
        model.input_spec = dataclasses.replace(
            spec, intensity=self._intensity_summary(), orientation=cfg.orientation
        )
        model.metadata = {"dataset": str(cfg.dataset), **prompt_metadata(cfg)}
        model.set_grad_checkpointing(cfg.grad_checkpoint)
        self.model = model
        self.net = model
        if self.distributed:
            from torch.distributed.nn.functional import all_reduce
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(model, find_unused_parameters=True)
            self.reduce_sums = all_reduce

    def _intensity_summary(self) -> dict | None:
        """What the model sees in training (issue 18), for the warning at prediction time."""
        cache = CacheFolder(self.train_set.cache)
        return intensity_summary(np.load(cache.image(name), mmap_mode="r") for name in self.train_set.cases)

    def _setup_optimiser(self) -> None:
        cfg = self.cfg
        self.trainable_names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=ADAMW_BETAS, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    def _write_config(self) -> None:
        if self.is_main:
            self.folder.write_config(self.cfg.to_dict(), self.model.config.to_dict())

    def _open_writer(self) -> None:
        if not self.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.folder.tensorboard_dir))
        except ImportError:
            self.writer = None

    def _plan_steps(self) -> None:
        cfg = self.cfg
        self.batches_per_epoch = math.ceil(math.ceil(len(self.train_set) / self.world) / self.batch)
        steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.accumulate)
        last_epoch = min(cfg.epochs, cfg.stop_epoch or cfg.epochs)
        self.total_steps = cfg.iterations if cfg.iterations else cfg.epochs * steps_per_epoch
        self.stop_steps = cfg.iterations if cfg.iterations else last_epoch * steps_per_epoch

    def _clip_warmup(self) -> None:
        """A warm-up as long as the run would never reach the peak lr: clip it to a tenth of the
        run's steps (at least 1), with a warning (issue 18)."""
        self.warmup = self.cfg.warmup
        if self.cfg.warmup >= self.stop_steps > 0:
            self.warmup = max(1, self.stop_steps // 10)
            if self.is_main:
                print(
                    f"masam train: warning: --warmup {self.cfg.warmup} is as long as the run "
                    f"({self.stop_steps} steps); clipped to {self.warmup} steps",
                    file=sys.stderr,
                )

    def _say(self, text: str) -> None:
        """A message to the user (main process), above the progress bar."""
        if not self.is_main:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def _start_summary(self) -> None:
        params = [(p.numel(), p.requires_grad) for p in self.model.parameters()]
        counts = (sum(n for n, t in params if t), sum(n for n, _ in params))
        self._say(
            start_summary(
                sorted(self.train_set.cases),
                [c.name for c in self.val_cases], (self.step, self.stop_steps), str(self.device), counts,
            )
        )  # fmt: skip

    # ------------------------------------------------------------------ checkpoints
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if k in self.trainable_names}

    def save_checkpoint(self) -> None:
        """The resumable state (main process only); atomic."""
        if not self.is_main:
            return
        state = {
            "model": self._trainable_state(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best": self.best,
            "rng": rng_state(),
        }
        with atomic_path(self.folder.state_file) as tmp:
            torch.save(state, tmp)

    def _load_state(self) -> bool:
        path = self.folder.state_file
        if not path.is_file():
            return False
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable state is reported the same way
            raise TrainingError(f"{path}: cannot read the training state: {err}") from None
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.batch_in_epoch, self.step = state["epoch"], state["batch_in_epoch"], state["step"]
        self.best = state["best"]
        set_rng_state(state["rng"])
        return True

    def save_model(self, path: Path) -> None:
        """Write the model to ``path`` (one of :attr:`run`'s model files), main process only."""
        if self.is_main:
            save_weights(self.model, path)

    def log(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self.folder.log_file, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(key, value, record["step"])

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict:
        """3D Dice per class on the held-out cases, through the prediction path of ``masam predict``."""
        was_training = self.model.training
        predictor = Predictor(  # fp32: the model selection must not depend on the hardware's bf16
            self.model, self.normalization, batch_size=max(1, self.cfg.batch_size), device=self.device,
            precision="fp32",
        )  # fmt: skip
        per_class: dict[int, list[float]] = {c: [] for c in range(1, self.dataset.num_classes + 1)}
        for case in self.val_cases:
            result = predictor.predict(case.images if case.channels else case.image)
            reference = read_label(case.label, result.volume).array
            for c in per_class:
                per_class[c].append(dice(result.labels == c, reference == c))
        self.model.train(was_training)
        means = {c: float(np.mean(v)) for c, v in per_class.items()}
        names = {v: k for k, v in self.dataset.labels.items()}  # issue 18: classes by name in log.jsonl
        per_name = {f"val_dice_{names.get(c, c)}": v for c, v in means.items()}
        return {"val_dice": float(np.mean(list(means.values()))), **per_name}

    # ------------------------------------------------------------------ steps
    def _batch_boxes(self, label: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(boxes ``[B, D, 4]`` around class ``box_label`` or None without box prompts, which samples
        keep their prompts ``[B]`` or None without prompt dropout)."""
        if self.cfg.prompt == "none":
            return None, None
        box_gen = self._prompt_generator()
        boxes = None
        if "box" in self.cfg.prompt:
            target = box_target(label, self.cfg.box_label)
            boxes = boxes_for_training(target, box_gen, self.cfg.box_jitter)
            if self.cfg.box_per == "stack":  # slice 0's box for the stack (dataset_bbox.py:91-108)
                boxes = boxes[:, :1].expand_as(boxes).contiguous()
            if self.cfg.box_3d:
                boxes = with_stack_boxes(boxes, target, self.cfg.box_3d, self.cfg.box_jitter, box_gen)
            if self.cfg.box_empty:
                boxes = with_empty_boxes(boxes, target, self.cfg.box_empty, self.cfg.box_jitter, box_gen)
            boxes = boxes.to(self.device)
        prompted = prompt_keep(label.shape[0], self.cfg.prompt_dropout, box_gen) if self.cfg.prompt_dropout else None
        return boxes, None if prompted is None else prompted.to(self.device)

    def _prompt_generator(self, stream: int = 0) -> torch.Generator:
        """Seeded by (seed, step, process, micro-batch, stream): a resumed run draws the same jitter,
        dropout and clicks."""
        key = [self.cfg.seed, self.step, self.ddp_rank, self.pending, *([stream] if stream else [])]
        return torch.Generator().manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))

    def _batch_clicks(self, label: torch.Tensor, prompted: torch.Tensor | None) -> SimulatedClicks | None:
        """Issue 22: the simulated clicks of ``--prompt points`` and ``box+points`` (None otherwise)."""
        if "points" not in self.cfg.prompt:
            return None
        rng = np.random.default_rng(int(self._prompt_generator(stream=1).initial_seed()))
        target = box_target(label, self.cfg.box_label).bool()
        return SimulatedClicks(
            target, self.cfg.click_rounds, self.cfg.box_label, prompted, self.cfg.prompt == "points", rng
        )

    def _forward_backward(self, batch: dict, last_in_step: bool) -> tuple[torch.Tensor, ...]:
        """Loss of one micro-batch and its backward pass, the host allocator switched explicitly
        between the forward and the backward mode."""
        cfg = self.cfg
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        boxes, prompted = self._batch_boxes(batch["label"])
        clicks = self._batch_clicks(batch["label"], prompted)
        sync = self.distributed and not last_in_step
        with self.net.no_sync() if sync else contextlib.nullcontext():
            configure_allocator(self.host_memory[0])
            losses = training_loss(
                self.net, image, label, boxes, self.dtype, cfg.dice_weight, cfg.include_background, self.reduce_sums,
                prompted, clicks,
            )
            configure_allocator(self.host_memory[1])
            if not torch.isfinite(losses[0]):
                raise TrainingError(
                    f"loss became {losses[0].item()} at step {self.step}; stopped. The last good checkpoint "
                    f"is kept in {self.run_dir} (try a lower --lr or --precision fp32)"
                )
            scaled = losses[0] / cfg.accumulate
            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
        return losses

    def train_step(self, batch: dict) -> dict | None:
        """One micro-batch: forward, backward and, when it completes an optimiser step (every
        ``accumulate`` micro-batches and at the end of the epoch), the step. Returns that step's
        metrics (``step``, ``epoch``, ``lr``, ``loss``, ``ce``, ``dice``, ``time_s``), else None."""
        cfg = self.cfg
        lr = lr_at(self.step, cfg.lr, self.warmup, cfg.power, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        last_in_step = self.pending + 1 == cfg.accumulate or self.batch_in_epoch + 1 == self.batches_per_epoch
        losses = self._forward_backward(batch, last_in_step)
        self.pending += 1
        self.batch_in_epoch += 1
        for key, value in zip(("loss", "ce", "dice"), losses):
            self.sums[key] += value.item() / cfg.accumulate
        if not last_in_step:
            return None
        self._optimiser_step()
        metrics = {"step": self.step, "epoch": self.epoch, "lr": lr, **self.sums}
        metrics["time_s"] = round(time.time() - self.started, 3)
        self.sums = _zero_sums()
        return metrics

    def _optimiser_step(self) -> None:
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.pending = 0
        self.step += 1
        self.steps_this_run += 1
        if self.check_sync and self.distributed:
            self._assert_ranks_agree()

    def on_step_end(self, metrics: dict) -> None:
        """Log, periodic state, and the two early stops: a signal (raises :class:`Interrupted`)
        and ``stop_after`` (raises :class:`_StopRun`), each after saving a resumable state."""
        self.log(metrics)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
            self.bar.update(1)
        if self.cfg.save_every and self.step % self.cfg.save_every == 0:
            self.save_checkpoint()
        signum = self._agreed_signal()
        if signum is not None:
            self.save_checkpoint()
            self.save_model(self.folder.last_model)
            raise Interrupted(signum)
        if self.stop_after is not None and self.steps_this_run >= self.stop_after:
            self.save_checkpoint()
            self.save_model(self.folder.last_model)
            raise _StopRun({"stopped_at_step": self.step})

    def on_epoch_end(self, final: bool) -> None:
        """Validation when due (and the best model), the last model and the resumable state."""
        cfg = self.cfg
        due = cfg.val_every and self.val_cases and (self.epoch % cfg.val_every == 0 or final)
        if due and self.is_main:
            metrics = {"step": self.step, "epoch": self.epoch, **self.validate()}
            self.log(metrics)
            self._say(validation_line(metrics))
            if metrics["val_dice"] > self.best:
                self.best = metrics["val_dice"]
                self.save_model(self.folder.best_model)
            self.plot_progress()
        if self.is_main and not self.val_cases and cfg.predict_with == "best":
            self.save_model(self.folder.best_model)  # no held-out cases: the last model is the best known
        self.save_model(self.folder.last_model)
        self.save_snapshot(final)
        self.save_checkpoint()
        self._barrier()

    # ------------------------------------------------------------------ issue 16: curves, validation/
    def plot_progress(self) -> None:
        """``progress.png`` from ``log.jsonl`` (main process; after each validation and at the end)."""
        log = self.folder.log_file
        if self.is_main and log.is_file():
            names = {v: k for k, v in self.dataset.labels.items() if v > 0}
            plot_progress(read_log(log), self.folder.progress_file, names)

    def save_validation(self) -> None:
        """A fold's held-out cases predicted by the final model into ``RUN/validation/`` (label maps
        and ``CASE_probabilities.npz``), as nnU-Net keeps them for cross-validation and ensembling."""
        if not (self.is_main and self.cfg.fold is not None and self.val_cases):
            return
        predictor = Predictor(self.model, self.normalization, batch_size=max(1, self.cfg.batch_size),
                              device=self.device, precision="fp32")  # fmt: skip
        cases = [(c.name, Path(c.image)) for c in self.val_cases]
        report = predict_cases(predictor, cases, self.folder.validation_dir, save_probabilities=True)
        if report.failed:
            raise TrainingError(f"{self.folder.validation_dir}: validation prediction failed: {report.failed}")
        self.model.train()

    def on_train_end(self) -> None:
        """After the last step: the fold's validation predictions and the final curves."""
        self.save_validation()
        self.plot_progress()

    def save_snapshot(self, final: bool) -> None:
        """``model_epoch_N.safetensors`` every ``snapshot_every`` epochs and at the last epoch (the
        original's ``epoch_N.pth``, trainer.py:122-137)."""
        every = self.cfg.snapshot_every
        if every and (self.epoch % every == 0 or final):
            self.save_model(self.folder.snapshot(self.epoch))

    # ------------------------------------------------------------------ the loop
    def _epoch_loader(self) -> DataLoader:
        cfg = self.cfg
        self.train_set.set_epoch(self.epoch)
        start = self.batch_in_epoch * self.batch
        sampler = EpochSampler(len(self.train_set), cfg.seed, self.epoch, self.ddp_rank, self.world, start)
        return DataLoader(
            self.train_set, batch_size=self.batch, sampler=sampler, num_workers=loader_workers(cfg.workers),
            generator=torch.Generator().manual_seed(cfg.seed),
        )  # fmt: skip

    def run_epoch(self) -> None:
        """The rest of the current epoch (or up to the last step), then its end."""
        self.pending, self.sums = 0, _zero_sums()
        for batch in self._epoch_loader():
            metrics = self.train_step(batch)
            if metrics is None:
                continue
            self.on_step_end(metrics)
            if self.step >= self.stop_steps:
                break
        if self.batch_in_epoch >= self.batches_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
            self.on_epoch_end(final=self.step >= self.stop_steps)
        elif self.step >= self.stop_steps:
            self.on_epoch_end(final=True)

    def run(self) -> dict:
        """Set up, train to the last step, and return a summary."""
        self.setup()
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        if self.progress and self.is_main:
            from tqdm import tqdm

            self.bar = tqdm(total=self.stop_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        self.started = time.time()
        try:
            self.net.train()
            while self.step < self.stop_steps:
                self.run_epoch()
            self.on_train_end()
            return {"steps": self.step, "epochs": self.epoch, "best_val_dice": self.best, "resumed": self.resumed}
        except _StopRun as stop:
            return stop.result
        finally:
            self._close(old_handlers)

    def _close(self, old_handlers: dict) -> None:
        if self.bar is not None:
            self.bar.close()
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
        if self.writer is not None:
            self.writer.close()

    # ------------------------------------------------------------------ processes
    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.signal_received = signum

    def _agreed_signal(self) -> int | None:
        """A signal seen by any process stops all of them at the same step."""
        if not self.distributed:
            return self.signal_received
        flag = torch.tensor([self.signal_received or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def _assert_ranks_agree(self) -> None:
        checksum = torch.stack([p.detach().double().sum() for p in self.model.parameters() if p.requires_grad]).cpu()
        gathered = [torch.zeros_like(checksum) for _ in range(self.world)]
        dist.all_gather(gathered, checksum)
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            raise TrainingError(f"processes hold different weights after step {self.step}")


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "ce": 0.0, "dice": 0.0}
