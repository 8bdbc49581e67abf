"""The run folder (``masam train -o RUN``) and the preprocessed cache as code: :class:`RunFolder`
and :class:`CacheFolder` alone know their file names, so every command reads and writes them
through these two classes.

A run folder holds::

    config.json                 {"train": the TrainConfig, "model": the ModelConfig}
    model_best.safetensors      the best model by validation Dice (the last one without held-out cases)
    model_last.safetensors      the model after the last epoch (or at a stop)
    model_epoch_N.safetensors   snapshots (--snapshot-every)
    training_state.pt           everything needed to resume bit for bit
    log.jsonl, progress.png, tensorboard/
    validation/                 a fold's held-out cases predicted by the final model
    postprocessing.json         the cross-validation's post-processing decision (masam postprocess)
    cache/                      the preprocessed dataset, unless --cache names another

and its parent may hold ``splits_final.json``, the folds shared by the fold runs beside it.
The config's ``predict_with`` ("best", "last" or "epoch:N") designates the model that prediction uses.

Imports nothing above :mod:`masam.errors`, so every layer can use it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import InputError, MissingFileError

CONFIG = "config.json"
MODEL_BEST = "model_best.safetensors"
MODEL_LAST = "model_last.safetensors"
STATE = "training_state.pt"
LOG = "log.jsonl"
PROGRESS = "progress.png"
TENSORBOARD = "tensorboard"
VALIDATION = "validation"
POSTPROCESSING = "postprocessing.json"
SPLITS = "splits_final.json"
CACHE = "cache"
MODELS = (MODEL_BEST, MODEL_LAST)


class RunFolder:
    """One training run's folder: every file name in it, its settings and which model to predict with."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # ------------------------------------------------------------------ file names
    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def best_model(self) -> Path:
        return self.path / MODEL_BEST

    @property
    def last_model(self) -> Path:
        return self.path / MODEL_LAST

    def snapshot(self, epoch: int) -> Path:
        return self.path / f"model_epoch_{epoch}.safetensors"

    @property
    def state_file(self) -> Path:
        return self.path / STATE

    @property
    def log_file(self) -> Path:
        return self.path / LOG

    @property
    def progress_file(self) -> Path:
        return self.path / PROGRESS

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def validation_dir(self) -> Path:
        return self.path / VALIDATION

    @property
    def postprocessing_file(self) -> Path:
        return self.path / POSTPROCESSING

    @property
    def shared_splits_file(self) -> Path:
        """The folds written beside the run (shared by the fold runs of one cross-validation)."""
        return self.path.parent / SPLITS

    def cache(self, given: str | os.PathLike | None = None) -> CacheFolder:
        """The run's cache: ``given`` (``--cache``), else ``RUN/cache``."""
        return CacheFolder(given if given else self.path / CACHE)

    def training_cache(self) -> CacheFolder:
        """The cache the run was trained from (its settings' ``cache``, else ``RUN/cache``)."""
        return self.cache(self.train_settings().get("cache"))

    # ------------------------------------------------------------------ settings
    def read_config(self) -> dict[str, Any]:
        """``config.json`` as written by the trainer; one clear error when it cannot be read."""
        try:
            config = json.loads(self.config_file.read_text())
        except FileNotFoundError:
            raise MissingFileError(f"{self.path}: not a training run folder (no {CONFIG})") from None
        except (OSError, ValueError) as err:
            raise InputError(f"{self.config_file}: cannot read the run settings: {err}") from None
        if not isinstance(config, dict):
            raise InputError(f"{self.config_file}: cannot read the run settings: not a JSON object")
        return config

    def train_settings(self) -> dict[str, Any]:
        """The ``"train"`` section of ``config.json`` (the run's TrainConfig as a dict)."""
        train = self.read_config().get("train", {})
        if not isinstance(train, dict):
            raise InputError(f"{self.config_file}: cannot read the run settings: 'train' is not an object")
        return train

    def write_config(self, train: dict[str, Any], model: dict[str, Any]) -> None:
        from .fileio import atomic_path

        with atomic_path(self.config_file) as tmp:
            tmp.write_text(json.dumps({"train": train, "model": model}, indent=1))

    def _settings_or_none(self) -> dict[str, Any] | None:
        try:
            return self.train_settings()
        except (InputError, MissingFileError):
            return None

    def fold(self) -> int | None:
        """The cross-validation fold the run was trained on, None if it is not a fold run."""
        try:
            return int((self._settings_or_none() or {}).get("fold"))
        except (TypeError, ValueError):
            return None

    def predict_with(self) -> str:
        """The model the run designates for prediction: "last", "epoch:N" (issue 24) or "best" (the default)."""
        designated = (self._settings_or_none() or {}).get("predict_with")
        if designated == "last" or (isinstance(designated, str) and designated.startswith("epoch:")):
            return designated
        return "best"

    def designated_models(self) -> tuple[Path, ...]:
        """The files prediction may use, in order: the last model where the run says
        ``predict_with: last`` (the paper preset), the snapshot where it says ``epoch:N``, else the
        best, else the last."""
        designated = self.predict_with()
        if designated == "last":
            return (self.last_model,)
        if designated.startswith("epoch:"):
            return (self.snapshot(int(designated.partition(":")[2])),)
        return (self.best_model, self.last_model)

    def is_run(self) -> bool:
        """True when the folder holds a trained model (either file)."""
        return self.path.is_dir() and any((self.path / m).is_file() for m in MODELS)

    def model(self) -> Path:
        """The weights file prediction uses (:meth:`designated_models`, the first that exists)."""
        for path in self.designated_models():
            if path.is_file():
                return path
        names = " or ".join(p.name for p in self.designated_models())
        raise MissingFileError(f"{self.path}: a run folder without {names}")


def find_weights(model_path: str | os.PathLike) -> Path:
    """A weights file as given, or the model a run folder designates (:meth:`RunFolder.model`)."""
    path = Path(model_path)
    return RunFolder(path).model() if path.is_dir() else path


def runs_in(path: str | os.PathLike) -> list[RunFolder]:
    """The runs ``path`` names: itself when it is a run (or not a folder of runs), else the fold runs
    of one cross-validation inside it (e.g. ``fold_0`` ... ``fold_4``). A folder holding other runs
    too (issue 28: ``runs/`` with ``scratch``, ``fold_0``, a box run) is refused: averaging every
    run in it is rarely what was meant."""
    folder = RunFolder(path)
    if not folder.path.is_dir() or folder.is_run():
        return [folder]
    runs = sorted((RunFolder(p) for p in folder.path.iterdir() if RunFolder(p).is_run()), key=lambda r: r.path)
    if not runs:
        return [folder]
    others = [r for r in runs if r.fold() is None]
    if others:
        names = ", ".join(r.path.name for r in runs)
        raise InputError(
            f"{folder.path}: holds runs that are not folds of one cross-validation ({names}); "
            f"choose with -m {runs[0].path} (one model) or -m {' '.join(str(r.path) for r in runs[:2])} (an ensemble)"
        )
    return runs


def is_folder_of_runs(path: str | os.PathLike) -> bool:
    """True for a folder that holds runs but is not one itself (``-m runs`` of fold runs)."""
    folder = RunFolder(path)
    return folder.path.is_dir() and not folder.is_run()


class CacheFolder:
    """The preprocessed dataset (``masam preprocess``, or ``RUN/cache``): ``plan.json`` and, per
    case, ``CASE_image.npy`` (float16 ``[S, C, size, size]``), ``CASE_label.npy`` (uint8
    ``[S, size, size]``) and ``CASE.json`` (source paths, geometry, slice axis)."""

    PLAN = "plan.json"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"CacheFolder({str(self.path)!r})"

    @property
    def plan_file(self) -> Path:
        return self.path / self.PLAN

    def image(self, case: str) -> Path:
        return self.path / f"{case}_image.npy"

    def label(self, case: str) -> Path:
        return self.path / f"{case}_label.npy"

    def record(self, case: str) -> Path:
        return self.path / f"{case}.json"

    def case_files(self, case: str) -> tuple[Path, Path, Path]:
        return self.image(case), self.label(case), self.record(case)

    def records(self) -> list[Path]:
        """Every case's ``CASE.json`` (the plan left out), sorted."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.glob("*.json") if p.name != self.PLAN)
