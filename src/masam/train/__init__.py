"""Training: the paper's recipe, exact resume, validation, DistributedDataParallel."""

from ..errors import TrainingError
from .config import PAPER_PRESET, PRESETS, TrainConfig, TrainSession, resolve_train_config, resume_train_config
from .losses import segmentation_loss, soft_dice_loss
from .schedule import EpochSampler, lr_at
from .trainer import Interrupted, Trainer, training_loss

__all__ = [
    "PAPER_PRESET",
    "PRESETS",
    "EpochSampler",
    "Interrupted",
    "TrainConfig",
    "TrainSession",
    "Trainer",
    "TrainingError",
    "lr_at",
    "resolve_train_config",
    "resume_train_config",
    "segmentation_loss",
    "soft_dice_loss",
    "training_loss",
]
