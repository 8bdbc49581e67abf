"""The image type every data module shares; a module of its own so that the readers (files,
DICOM) can all build on it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Volume:
    """An image as a numpy array with its geometry.

    ``array``: volumes ``[z, y, x]`` (SimpleITK's numpy order); video ``[t, y, x, 3]``.
    ``spacing``, ``origin``: SimpleITK order (x, y, z); ``direction``: 9 values, row-major, column
    i the direction of axis i. ``is_video``: a frame folder (RGB, unit spacing). ``source``: where
    the voxels came from when a writer needs more than the geometry (a DICOM series:
    ``masam.data.dicom.SeriesInfo``, for DICOM-SEG output); None for files. ``channels``: the
    arrays of channels 1, 2 of a multi-channel case (``CASE_0001``, ...; same shape and geometry
    as ``array``, which is channel 0); empty for one channel.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    path: Path
    is_video: bool = False
    source: object | None = field(default=None, repr=False, compare=False)
    channels: tuple[np.ndarray, ...] = field(default=(), repr=False, compare=False)  # issue 15

    def same_geometry(self, other: Volume, tol: float = 1e-4) -> bool:
        return (
            self.array.shape[:3] == other.array.shape[:3]
            and np.allclose(self.spacing, other.spacing, atol=tol)
            and np.allclose(self.origin, other.origin, atol=tol * max(1.0, float(np.abs(self.origin).max())))
            and np.allclose(self.direction, other.direction, atol=tol)
        )
