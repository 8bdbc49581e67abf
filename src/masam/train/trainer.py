"""``masam train``: the paper's recipe with exact resume, validation and DistributedDataParallel.

Run folder: ``config.json``, ``model_last.safetensors``, ``model_best.safetensors``,
``training_state.pt`` (everything needed to continue bit for bit: trainable weights, optimiser,
gradient scaler, epoch and position in the epoch's data order, RNG states), ``log.jsonl``,
``tensorboard/`` and ``cache/`` (the preprocessed dataset). Every file is written to a temporary
name and renamed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

from ..allocator import configure_allocator, training_policy
from ..data import Normalization, StackAugmenter, StackDataset, load_dataset, preprocess_dataset, split_cases
from ..data.io import read_label
from ..eval.metrics import dice
from ..fileio import atomic_path
from ..infer.predictor import Predictor
from ..model import ModelConfig, build_model
from ..model.checkpoint import infer_arch, load_sam_weights, read_torch_file, resolve_device, save_weights
from ..model.masam import MASAM
from ..precision import PRECISIONS
from .config import TrainConfig
from .losses import segmentation_loss

STATE_FILE = "training_state.pt"


class TrainingError(RuntimeError):
    """Training cannot go on; the message says why and what was kept."""


class Interrupted(Exception):
    """Raised after a resumable state was saved on SIGTERM / SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


class EpochSampler(Sampler[int]):
    """The epoch's data order: a permutation drawn from (seed, epoch), padded to a multiple of the
    world size and dealt out round-robin to the ranks; ``start`` skips the first items of this rank's
    share (to resume inside an epoch)."""

    def __init__(self, size: int, seed: int, epoch: int, rank: int = 0, world: int = 1, start: int = 0) -> None:
        order = torch.randperm(size, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)).tolist()
        padded = order + order[: (-len(order)) % world]
        self.indices = padded[rank::world][start:]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def lr_at(step: int, base: float, warmup: int, power: float, total: int) -> float:
    """The original's schedule: linear warm-up, then ``(1 - (step - warmup) / total) ** power``."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, 1.0 - (step - warmup) / max(total, 1)) ** power


def boxes_for_training(label: torch.Tensor, generator: torch.Generator, jitter: float) -> torch.Tensor:
    """One box per slice around all foreground, each side moved by a uniform random amount of up
    to ``jitter`` times the box's side (at least 1 pixel), clipped to the image; NaN where a slice
    has no foreground. ``label`` ``[B, D, H, W]`` -> ``[B, D, 4]`` (x0, y0, x1, y1)."""
    b, d, h, w = label.shape
    boxes = torch.full((b, d, 4), float("nan"))
    for i in range(b):
        for j in range(d):
            rows, cols = torch.nonzero(label[i, j] > 0, as_tuple=True)
            if rows.numel() == 0:
                continue
            x0, x1, y0, y1 = cols.min().item(), cols.max().item(), rows.min().item(), rows.max().item()
            sx, sy = max(1.0, jitter * (x1 - x0 + 1)), max(1.0, jitter * (y1 - y0 + 1))
            noise = (torch.rand(4, generator=generator) * 2 - 1) * torch.tensor([sx, sy, sx, sy])
            box = torch.tensor([x0, y0, x1, y1], dtype=torch.float32) + noise
            box[0::2] = box[0::2].clamp(0, w - 1)
            box[1::2] = box[1::2].clamp(0, h - 1)
            boxes[i, j] = box
    return boxes


def training_loss(
    net: torch.nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
    boxes: torch.Tensor | None,
    dtype: torch.dtype | None,
    dice_weight: float = 0.8,
    include_background: bool = True,
    reduce_sums=None,
    host_memory: tuple[str, str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, CE, Dice) of one micro-batch: the forward pass under autocast to ``dtype`` (None:
    float32), the loss in float32. ``image`` ``[B, D, 3, S, S]``, ``label`` ``[B, D, S, S]``.
    ``host_memory``: (forward, backward) allocator modes from :func:`training_policy`; the forward
    one is applied for this pass and the backward one is left in place for ``loss.backward()``."""
    if host_memory is not None:
        configure_allocator(host_memory[0])
    with torch.autocast(image.device.type, dtype=dtype, enabled=dtype is not None):
        out = net(image, boxes)
    losses = segmentation_loss(out["logits"].float(), label, dice_weight, include_background, reduce_sums)
    if host_memory is not None:
        configure_allocator(host_memory[1])
    return losses


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2] if random.getstate()[2] is not None else -1,
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None if state["python_pos"] == -1 else state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    def __init__(
        self, config: TrainConfig, *, progress: bool = True, stop_after: int | None = None, check_sync: bool = False
    ):
        self.cfg = config
        self.progress = progress
        self.stop_after = stop_after  # optimizer steps in this run, then save and stop (time-boxed jobs)
        self.check_sync = check_sync
        self.signal_received: int | None = None
        self.run_dir = Path(config.output)

    # ------------------------------------------------------------------ set-up
    def _setup_distributed(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.distributed = self.world > 1
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        device = resolve_device(self.cfg.device)
        if device.type == "cuda" and self.distributed:
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        self.device = device
        if self.cfg.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.cfg.precision!r}")
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if self.cfg.precision == "fp16" and device.type != "cuda":
            raise ValueError("fp16 training needs a CUDA GPU; use --precision bf16 or fp32 on the CPU")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _prepare_data(self) -> None:
        cfg = self.cfg
        dataset = load_dataset(cfg.dataset, modality=cfg.modality)
        self.dataset = dataset
        self.normalization = Normalization(dataset.modality, cfg.ct_window, cfg.mri_percentile)
        train_cases, val_cases = split_cases(dataset.training, cfg.val_fraction, cfg.seed, cfg.split_file)
        self.val_cases = val_cases
        cache = self.run_dir / "cache"
        if self.is_main:
            preprocess_dataset(
                dataset, cache, cfg.image_size, self.normalization, self.progress, cfg.preprocess_processes
            )
        self._barrier()
        augment = StackAugmenter() if cfg.augment else None
        self.train_set = StackDataset(cache, [c.name for c in train_cases], cfg.slices, augment, cfg.seed)

    def _build_model(self) -> MASAM:
        cfg = self.cfg
        sam_state = read_torch_file(cfg.sam_checkpoint) if cfg.sam_checkpoint else None
        arch = cfg.arch
        if sam_state is not None:
            arch = infer_arch(sam_state, cfg.sam_checkpoint)
        model_config = ModelConfig(
            arch=arch,
            image_size=cfg.image_size,
            num_classes=self.dataset.num_classes,
            rank=cfg.rank,
            scale=cfg.scale,
            fact_dropout=cfg.fact_dropout,
            adapter_kernel=cfg.adapter_kernel,
            slices=cfg.slices,
            pretrained_encoder=sam_state is not None,
            label_names=self.dataset.labels,
        )
        torch.manual_seed(cfg.seed)
        model = build_model(model_config)
        if sam_state is not None:
            model.base_fingerprint = load_sam_weights(model, sam_state, cfg.sam_checkpoint)
        model.metadata = {
            "normalization": self.normalization.to_dict(),
            "modality": self.normalization.modality,
            "dataset": str(self.cfg.dataset),
        }
        model.set_grad_checkpointing(cfg.grad_checkpoint)
        return model.to(self.device)

    # ------------------------------------------------------------------ state
    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if k in self.trainable_names}

    def _save_state(self) -> None:
        """The resumable state (rank 0); atomic."""
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
            "rng": _rng_state(),
        }
        with atomic_path(self.run_dir / STATE_FILE) as tmp:
            torch.save(state, tmp)

    def _load_state(self) -> bool:
        path = self.run_dir / STATE_FILE
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
        _set_rng_state(state["rng"])
        return True

    def _save_model(self, name: str) -> None:
        if self.is_main:
            save_weights(self.model, self.run_dir / name)

    def _log(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.writer.add_scalar(key, value, record["step"])

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict:
        """3D Dice per class on the held-out cases, through the prediction path of ``masam predict``."""
        was_training = self.model.training
        predictor = Predictor(
            self.model, self.normalization, batch_size=max(1, self.cfg.batch_size), device=self.device
        )
        per_class: dict[int, list[float]] = {c: [] for c in range(1, self.dataset.num_classes + 1)}
        for case in self.val_cases:
            result = predictor.predict(case.image)
            reference = read_label(case.label, result.volume).array
            for c in per_class:
                per_class[c].append(dice(result.labels == c, reference == c))
        self.model.train(was_training)
        means = {c: float(np.mean(v)) for c, v in per_class.items()}
        return {"val_dice": float(np.mean(list(means.values()))), **{f"val_dice_{c}": v for c, v in means.items()}}

    # ------------------------------------------------------------------ the loop
    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.signal_received = signum

    def run(self) -> dict:
        cfg = self.cfg
        self._setup_distributed()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        state_exists = (self.run_dir / STATE_FILE).is_file()
        if state_exists and not cfg.resume:
            raise TrainingError(f"{self.run_dir}: holds a training state; use --resume to continue or another folder")
        self._prepare_data()
        self.model = self._build_model()
        self.trainable_names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.epoch, self.batch_in_epoch, self.step, self.best = 0, 0, 0, -1.0
        resumed = self._load_state() if cfg.resume else False
        if self.is_main:
            with atomic_path(self.run_dir / "config.json") as tmp:
                tmp.write_text(json.dumps({"train": cfg.to_dict(), "model": self.model.config.to_dict()}, indent=1))
        self.writer = None
        if self.is_main:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self.writer = None

        net = self.model
        reduce_sums = None
        if self.distributed:
            from torch.distributed.nn.functional import all_reduce
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(self.model, find_unused_parameters=True)
            reduce_sums = all_reduce

        batches_per_epoch = math.ceil(math.ceil(len(self.train_set) / self.world) / cfg.batch_size)
        steps_per_epoch = math.ceil(batches_per_epoch / cfg.accumulate)
        last_epoch = min(cfg.epochs, cfg.stop_epoch or cfg.epochs)
        total_steps = cfg.iterations if cfg.iterations else cfg.epochs * steps_per_epoch
        stop_steps = cfg.iterations if cfg.iterations else last_epoch * steps_per_epoch
        dtype = PRECISIONS[cfg.precision]
        host_memory = training_policy(cfg.host_allocator, cfg.grad_checkpoint)

        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        bar = None
        if self.progress and self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=stop_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        steps_this_run = 0
        t0 = time.time()
        try:
            net.train()
            while self.step < stop_steps:
                self.train_set.set_epoch(self.epoch)
                sampler = EpochSampler(
                    len(self.train_set),
                    cfg.seed,
                    self.epoch,
                    self.rank,
                    self.world,
                    self.batch_in_epoch * cfg.batch_size,
                )
                loader = DataLoader(
                    self.train_set, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                    generator=torch.Generator().manual_seed(cfg.seed),
                )  # fmt: skip
                pending = 0
                sums = {"loss": 0.0, "ce": 0.0, "dice": 0.0}
                for batch in loader:
                    lr = lr_at(self.step, cfg.lr, cfg.warmup, cfg.power, total_steps)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    image = batch["image"].to(self.device, non_blocking=True)
                    label = batch["label"].to(self.device, non_blocking=True)
                    boxes = None
                    if cfg.prompt == "box":
                        # seeded by (seed, step, rank, micro-batch): a resumed run draws the same jitter
                        box_gen = torch.Generator().manual_seed(
                            int(np.random.SeedSequence([cfg.seed, self.step, self.rank, pending]).generate_state(1)[0])
                        )
                        boxes = boxes_for_training(batch["label"], box_gen, cfg.box_jitter).to(self.device)
                    pending += 1
                    self.batch_in_epoch += 1
                    last_in_step = pending == cfg.accumulate or self.batch_in_epoch == batches_per_epoch
                    sync = self.distributed and not last_in_step
                    with net.no_sync() if sync else contextlib.nullcontext():
                        loss, ce, dl = training_loss(
                            net, image, label, boxes, dtype, cfg.dice_weight, cfg.include_background, reduce_sums,
                            host_memory,
                        )  # fmt: skip
                        if not torch.isfinite(loss):
                            raise TrainingError(
                                f"loss became {loss.item()} at step {self.step}; stopped. The last good checkpoint "
                                f"is kept in {self.run_dir} (try a lower --lr or --precision fp32)"
                            )
                        scaled = loss / cfg.accumulate
                        (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                    for key, value in (("loss", loss), ("ce", ce), ("dice", dl)):
                        sums[key] += value.item() / cfg.accumulate
                    if not last_in_step:
                        continue
                    if self.scaler is not None:
                        self.scaler.step(self.optimizer)
                        self.scaler.update()
                    else:
                        self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    pending = 0
                    self.step += 1
                    steps_this_run += 1
                    if self.check_sync and self.distributed:
                        self._assert_ranks_agree()
                    record = {
                        "step": self.step,
                        "epoch": self.epoch,
                        "lr": lr,
                        **sums,
                        "time_s": round(time.time() - t0, 3),
                    }
                    self._log(record)
                    sums = {"loss": 0.0, "ce": 0.0, "dice": 0.0}
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                        bar.update(1)
                    if cfg.save_every and self.step % cfg.save_every == 0:
                        self._save_state()
                    signum = self._agreed_signal()
                    if signum is not None:
                        self._save_state()
                        self._save_model("model_last.safetensors")
                        raise Interrupted(signum)
                    if self.stop_after is not None and steps_this_run >= self.stop_after:
                        self._save_state()
                        self._save_model("model_last.safetensors")
                        return {"stopped_at_step": self.step}
                    if self.step >= stop_steps:
                        break
                if self.batch_in_epoch >= batches_per_epoch:
                    self.epoch += 1
                    self.batch_in_epoch = 0
                    self._end_of_epoch(final=self.step >= stop_steps)
                elif self.step >= stop_steps:
                    self._end_of_epoch(final=True)
            result = {"steps": self.step, "epochs": self.epoch, "best_val_dice": self.best, "resumed": resumed}
            return result
        finally:
            if bar is not None:
                bar.close()
            for s, handler in old_handlers.items():
                signal.signal(s, handler)
            if self.writer is not None:
                self.writer.close()

    def _end_of_epoch(self, final: bool) -> None:
        cfg = self.cfg
        due = cfg.val_every and self.val_cases and (self.epoch % cfg.val_every == 0 or final)
        if due and self.is_main:
            metrics = self.validate()
            self._log({"step": self.step, "epoch": self.epoch, **metrics})
            if metrics["val_dice"] > self.best:
                self.best = metrics["val_dice"]
                self._save_model("model_best.safetensors")
        if self.is_main and not self.val_cases:
            self._save_model("model_best.safetensors")  # no held-out cases: the last model is the best known
        self._save_model("model_last.safetensors")
        self._save_state()
        self._barrier()

    def _agreed_signal(self) -> int | None:
        """A signal seen by any rank stops all ranks at the same step."""
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
            raise TrainingError(f"ranks hold different weights after step {self.step}")
