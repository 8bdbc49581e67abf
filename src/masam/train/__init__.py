"""Training: the paper's recipe, exact resume, validation, DistributedDataParallel."""

from .config import PAPER_PRESET, TrainConfig
from .losses import segmentation_loss, soft_dice_loss
from .trainer import Interrupted, Trainer, TrainingError, lr_at, training_loss

__all__ = [
    "PAPER_PRESET",
    "Interrupted",
    "TrainConfig",
    "Trainer",
    "TrainingError",
    "lr_at",
    "segmentation_loss",
    "soft_dice_loss",
    "training_loss",
]
