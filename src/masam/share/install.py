"""``masam install`` and the models ``masam predict -m`` finds by name or archive, offline.

Installed models live in one folder (``$MASAM_MODELS``, else ``~/.masam/models``), one sub-folder
per model holding the archive's members as they were checked (:func:`extract_archive`). An archive
given to ``masam predict -m model.zip`` is checked and unpacked into a temporary folder for the
duration of the command.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import InputError, MissingFileError
from .archive import MANIFEST, check_model_name, extract_archive, verify_archive
from .export import FOLDS, SAM_BASE

MODELS_ENV = "MASAM_MODELS"


def models_folder(folder: str | os.PathLike | None = None) -> Path:
    """Where models are installed: ``folder``, else ``$MASAM_MODELS``, else ``~/.masam/models``."""
    if folder:
        return Path(folder)
    return Path(os.environ.get(MODELS_ENV) or Path.home() / ".masam" / "models")


def install_archive(archive: str | os.PathLike, name: str | None = None, models: str | os.PathLike | None = None,
                    force: bool = False) -> tuple[Path, dict]:  # fmt: skip
    """Check ``archive`` and unpack it into the models folder as ``name`` (default: its manifest's
    name). Nothing is written unless the whole archive passes; an installed model of the same name
    is replaced only with ``force``, and then only once the new one is complete."""
    manifest = verify_archive(archive)  # all of it, before the models folder is touched
    name = check_model_name(name or manifest.get("name"), archive)
    folder = models_folder(models)
    target = folder / name
    if target.exists() and not force:
        raise InputError(f"{target}: a model named {name!r} is installed already (--force replaces it)")
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".tmp-new-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        extract_archive(archive, staging)
        if target.exists():  # replaced only now that the new one is complete
            old = folder / f".tmp-old-{name}"
            os.replace(target, old)
            shutil.rmtree(old)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target, manifest


def installed_model(folder: Path) -> dict | None:
    """The manifest of an installed (or unpacked) model folder, else None."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: damaged installed model: {err}") from None


def _model_folder(given: str, scratch: Path) -> Path | None:
    """The unpacked folder of ``given``: an archive (checked and unpacked into ``scratch``), an
    installed model's name, or an unpacked folder; None for anything else (a run, weights)."""
    path = Path(given)
    if path.is_file() and path.suffix == ".zip":
        return _unpack(path, scratch / f"{len(list(scratch.iterdir()))}")
    if path.is_dir() and installed_model(path) is not None:
        return path
    if not path.exists() and "/" not in given and os.sep not in given:
        installed = models_folder() / given
        if installed_model(installed) is not None:
            return installed
        raise MissingFileError(f"{given}: no such file, run folder or installed model (in {models_folder()})")
    return None


def _unpack(path: Path, destination: Path) -> Path:
    extract_archive(path, destination)
    return destination


def _sam_for(folder: Path, manifest: dict, sam_checkpoint: str | None) -> str | None:
    """The SAM weights an unpacked model needs: the user's checkpoint, else the included base."""
    sam = manifest.get("sam") or {}
    if sam.get("mode") == "included" and sam_checkpoint is None:
        return str(folder / SAM_BASE)
    if sam.get("mode") == "reference" and sam_checkpoint is None:
        raise MissingFileError(
            f"{folder}: model {manifest.get('name')!r} was fine-tuned from SAM {sam.get('arch')} "
            f"({sam.get('file')}, base fingerprint {str(sam.get('fingerprint'))[:12]}): give it with --sam-checkpoint"
        )
    return sam_checkpoint


@contextlib.contextmanager
def resolved_models(models: list[str], sam_checkpoint: str | None) -> Iterator[tuple[list[str], str | None]]:
    """``-m`` values with archives and installed names turned into their fold runs, and the SAM
    weights to use: ``(paths, sam_checkpoint)``; archives are unpacked for the ``with`` block only."""
    with tempfile.TemporaryDirectory(prefix="masam-models-") as scratch:
        paths, sam = [], sam_checkpoint
        for given in models:
            folder = _model_folder(given, Path(scratch))
            if folder is None:
                paths.append(given)
                continue
            manifest = installed_model(folder)
            paths.append(str(folder / FOLDS))
            sam = _sam_for(folder, manifest, sam_checkpoint) or sam
        yield paths, sam
