"""Training options, their defaults and the paper's preset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class TrainConfig:
    dataset: str = ""
    output: str = ""
    sam_checkpoint: str | None = None
    arch: str = "vit_b"
    modality: str | None = None
    ct_window: tuple[float, float] = (-200.0, 250.0)
    mri_percentile: float = 99.0
    epochs: int = 400
    stop_epoch: int | None = 300  # the paper schedules 400 epochs and stops at 300
    iterations: int | None = None  # if set: optimizer steps to run (overrides epochs)
    batch_size: int = 24
    accumulate: int = 1
    lr: float = 8e-4
    warmup: int = 250
    power: float = 7.0
    weight_decay: float = 0.1
    slices: int = 5
    image_size: int = 512
    rank: int = 32
    scale: float = 1.0
    adapter_kernel: int = 3
    prompt: str = "none"  # none | box
    box_jitter: float = 0.1
    dice_weight: float = 0.8
    include_background: bool = True
    augment: bool = True
    fact_dropout: float = 0.1
    val_every: int = 20  # epochs; 0 = no validation
    val_fraction: float = 0.2
    split_file: str | None = None
    seed: int = 1234
    precision: str = "fp32"  # fp32 | bf16 | fp16
    grad_checkpoint: bool = False
    host_allocator: str = "auto"  # see masam.allocator.training_policy
    workers: int = 2
    preprocess_processes: int = 1  # cases preprocessed at once into the cache
    device: str = "cpu"
    save_every: int = 0  # optimizer steps between resumable states; 0 = at the end of each epoch
    resume: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        out = cls(**{k: v for k, v in values.items() if k in known})
        out.ct_window = tuple(out.ct_window)
        return out


PAPER_PRESET = {
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
}
