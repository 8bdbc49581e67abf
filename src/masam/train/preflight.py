"""Checks before work (issue 18): every setting and input file of a training run is validated
before anything is preprocessed or written, so that a misspelt arch, an image size that is not a
multiple of 16, a file that is not a SAM checkpoint or an unusable dataset fail in one line at once,
not after the dataset was preprocessed into the run folder."""

from __future__ import annotations

from ..data.check import check_dataset, format_report
from ..errors import ConfigError, DatasetError
from ..model.checkpoint import sam_checkpoint_arch
from ..model.config import ARCHS
from .config import TrainConfig

PATCH = 16  # the ViT patch size: the image size must be a multiple of it


def check_before_work(cfg: TrainConfig, dataset: bool = True) -> None:
    """Raise a :class:`masam.errors.MasamError` naming the first wrong setting or file; reads only.
    ``dataset`` False skips the dataset check (it reads every case once)."""
    if cfg.arch is not None and cfg.arch not in ARCHS:
        raise ConfigError(f"unknown --arch {cfg.arch!r}; choose one of {', '.join(ARCHS)}")
    if cfg.image_size <= 0 or cfg.image_size % PATCH:
        raise ConfigError(f"--image-size must be a positive multiple of {PATCH}, got {cfg.image_size}")
    if cfg.sam_checkpoint is None and cfg.arch is None:
        raise ConfigError("give --sam-checkpoint (fine-tune SAM) or --arch (train from random initialisation)")
    if cfg.sam_checkpoint is not None:
        sam_checkpoint_arch(cfg.sam_checkpoint, cfg.arch)
    if dataset and cfg.check_dataset:
        _check_dataset(cfg.dataset, cfg.check_processes)


def _check_dataset(root: str, processes: int) -> None:
    """``masam check`` (issue 15) before anything is read for training: an unusable dataset stops
    here with check's own report, its table of problems (issue 28: not one long line)."""
    report = check_dataset(root, processes=processes)
    if any(p.severity == "error" for p in report.problems):
        raise DatasetError(f"{root}: the dataset is not usable; masam check's report:\n{format_report(report)}")
