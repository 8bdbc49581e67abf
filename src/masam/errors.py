"""The package's error classes. Each names the file or setting and the problem in one line; the
command line prints such errors as ``masam CMD: error: ...`` and lets any other exception keep its
traceback (a bug, not a bad input). Imports nothing from the package, so every layer can use it.

The second bases keep ``except ValueError`` / ``except RuntimeError`` callers working."""

from __future__ import annotations


class MasamError(Exception):
    """Base of every error masam raises for bad input, files or settings."""


class ConfigError(MasamError, ValueError):
    """A setting that cannot be used (unknown arch, image size, precision, modality, ...)."""


class CheckpointError(MasamError, ValueError):
    """A weights file that cannot be used; the message names the file and the problem."""


class DatasetError(MasamError, ValueError):
    """A dataset folder that cannot be used; the message names the file and the problem."""


class ImageReadError(MasamError, ValueError):
    """An input image that cannot be used; the message names the file and the problem."""


class InputError(MasamError, ValueError):
    """Other bad input to a command (box files, prompts, ...)."""


class MissingFileError(MasamError, FileNotFoundError):
    """A file or folder that should be there is not, or holds nothing usable."""


class OutputError(MasamError, OSError):
    """An output that cannot be written (folder not creatable, ...)."""


class DeviceError(MasamError, RuntimeError):
    """A device that was asked for is not available."""


class TrainingError(MasamError, RuntimeError):
    """Training cannot go on; the message says why and what was kept."""
