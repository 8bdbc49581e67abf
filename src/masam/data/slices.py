"""From a volume to model-sized slice arrays, and slice stacks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..spec import SLICES
from .io import Volume, slice_axis
from .normalize import ChannelNormalization, Normalization


def stack_indices(num_slices: int, centre: int, slices: int = SLICES) -> np.ndarray:
    """Indices of the ``slices`` slices centred on ``centre``, ends repeated: ``[slices]``."""
    half = slices // 2
    return np.clip(np.arange(centre - half, centre - half + slices), 0, num_slices - 1)


def boxes_from_mask(mask: np.ndarray) -> np.ndarray:
    """One box per slice around all of its foreground: ``[S, h, w]`` -> ``[S, 4]`` float64
    (x0, y0, x1, y1: first and last foreground column and row); a row of NaN where a slice is empty.
    The one place boxes come from masks (training prompts, ``--boxes-from-labels``)."""
    mask = np.asarray(mask)
    boxes = np.full((mask.shape[0], 4), np.nan)
    for i, plane in enumerate(mask):
        rows, cols = np.nonzero(plane)
        if rows.size:
            boxes[i] = (cols.min(), rows.min(), cols.max(), rows.max())
    return boxes


def to_slices(volume: Volume, axis: int | None = None) -> tuple[np.ndarray, int]:
    """The image as ``[S, C, h, w]`` with slices along ``axis`` (default :func:`slice_axis`, the
    one function that chooses it), and that axis."""
    axis = slice_axis(volume) if axis is None else axis
    if volume.is_video:
        return np.moveaxis(volume.array, -1, 1), 0
    if volume.channels:  # [C, z, y, x] -> [S, C, h, w]
        return np.moveaxis(np.stack([volume.array, *volume.channels]), axis + 1, 0), axis
    return np.moveaxis(volume.array, axis, 0)[:, None], axis


def labels_to_slices(array: np.ndarray, axis: int, is_video: bool = False) -> np.ndarray:
    return array if is_video else np.moveaxis(array, axis, 0)


def labels_from_slices(array: np.ndarray, axis: int, is_video: bool = False) -> np.ndarray:
    """Inverse of :func:`labels_to_slices` (slice-first back to the image's own order)."""
    return array if is_video else np.moveaxis(array, 0, axis)


def resize_slices(
    array: np.ndarray | torch.Tensor, size: int | tuple[int, int], labels: bool = False, chunk: int = 32,
    value_range: tuple[float, float] = (0.0, 1.0),
):  # fmt: skip
    """In-plane resize: images ``[S, C, h, w]`` cubic (clamped to ``value_range``, the
    normalisation's), labels ``[S, h, w]`` nearest. Returns a tensor (float32 or the label dtype)."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    x = torch.as_tensor(array)
    if tuple(x.shape[-2:]) == size:
        return x if labels else x.float()
    out = []
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk]
        if labels:
            part = F.interpolate(part[:, None].float(), size=size, mode="nearest-exact")[:, 0].to(x.dtype)
        else:
            part = F.interpolate(part.float(), size=size, mode="bicubic", align_corners=False).clamp_(*value_range)
        out.append(part)
    return torch.cat(out)


def prepare_image(
    volume: Volume, normalization: Normalization | ChannelNormalization, image_size: int
) -> tuple[torch.Tensor, int]:
    """Normalised, model-sized slices ``[S, C, image_size, image_size]`` (float32) and the slice axis."""
    slices, axis = to_slices(volume)
    value_range = getattr(normalization, "value_range", (0.0, 1.0))
    return resize_slices(normalization(slices), image_size, value_range=value_range), axis
