"""The original MA-SAM's input convention, as pure functions.

Orientation. The original reads a NIfTI with nibabel (``get_fdata()``: array ``N[i, j, k]``, i.e.
``[x, y, z]``) and stores every stack of slices ``k0..k0+4`` as
``np.flip(np.rot90(N[:, :, k0:k0 + 5], 1, axes=(0, 1)), axis=1)`` (util_script_btcv.py:48-52).
SimpleITK, which masam reads with, gives the same voxels as ``S[z, y, x] = N[x, y, z]``. Working
through the two axis operations: the original's slice ``s`` of that stack is
``S[k0 + s, ::-1, ::-1]``, SimpleITK's ``[y, x]`` slice turned by 180° (rows and columns both
reversed). The original's test loop undoes it with ``np.rot90(np.flip(P, axis=1), k=-1, axes=(0, 1))``
(test.py:79-81), which is the same 180° turn back. Frames of a video (EndoVis) are read by Pillow as
``[y, x]`` and go through the same two operations (util_script_endovis18.py:130): that is an
anti-transpose, ``B[i, j] = A[W-1-j, H-1-i]``, not a turn.

Intensities (test.py:120-124, dataset.py:373-378): clip to the CT window, scale to 0-255, subtract
the dataset mean and divide by its std (float32), then min-max scale **each stack** (5 slices)
to [0, 1] with 1e-8 added to the range.

Resizing: cubic splines (``scipy.ndimage.zoom(order=3)``) in-plane, stacks to the model's size
(dataset.py:336-338; test.py:42-43 calls it but only works when no resizing is needed) and the
probabilities back to the slice's size (test.py:59-60).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..spec import SLICES

# dataset.py:19-21 and test.py:24-26 (BTCV); dataset_bbox.py:20-22 (the box-prompted tumour task)
ORIGINAL_CT = {"window": (-200.0, 250.0), "mean": 50.21997497685108, "std": 68.47153712416372}
ORIGINAL_CT_BOX = {"window": (-50.0, 200.0), "mean": 30.52402855024227, "std": 64.07289127027198}


def to_original_orientation(slices: np.ndarray) -> np.ndarray:
    """SimpleITK-ordered slices ``[..., y, x]`` -> the original's orientation (turned by 180°)."""
    return slices[..., ::-1, ::-1]


def from_original_orientation(slices: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_original_orientation` (the 180° turn is its own inverse)."""
    return slices[..., ::-1, ::-1]


def turn_original(x: torch.Tensor, video: bool) -> torch.Tensor:
    """Slices ``[..., H, W]`` between masam's orientation and the original's, either way (its own
    inverse): turned by 180°, video frames anti-transposed (issue 24: what the network sees in
    training and prediction under ``--orientation original``)."""
    return (x.transpose(-1, -2) if video else x).flip(-2, -1)


def turn_original_boxes(boxes: torch.Tensor, size: int, video: bool) -> torch.Tensor:
    """Boxes ``[..., 4]`` (x0, y0, x1, y1) in a ``size``-square slice, turned as :func:`turn_original`
    turns the slice (NaN rows stay NaN)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    last = size - 1
    if video:
        return torch.stack([last - y1, last - x1, last - y0, last - x0], -1)
    return torch.stack([last - x1, last - y1, last - x0, last - y0], -1)


def turn_original_points(points: torch.Tensor, size: int, video: bool) -> torch.Tensor:
    """Points ``[..., 3]`` (x, y, label) in a ``size``-square slice, turned as :func:`turn_original`
    turns the slice; labels kept."""
    x, y, label = points.unbind(-1)
    last = size - 1
    if video:
        return torch.stack([last - y, last - x, label], -1)
    return torch.stack([last - x, last - y, label], -1)


def frames_to_original_orientation(frames: np.ndarray) -> np.ndarray:
    """Video frames ``[..., y, x]`` as Pillow reads them -> the original's (anti-transposed)."""
    return np.swapaxes(frames, -1, -2)[..., ::-1, ::-1]


def window_ct(array: np.ndarray, window=ORIGINAL_CT["window"], mean=ORIGINAL_CT["mean"], std=ORIGINAL_CT["std"]):
    """The original's CT intensities before the per-stack min-max: float32, any shape."""
    low, high = window
    scaled = (np.clip(array, low, high) - low) / (high - low) * 255.0
    return (np.float32(scaled) - mean) / std


def minmax_stack(stack: np.ndarray) -> np.ndarray:
    """One stack scaled to [0, 1] by its own minimum and maximum (+1e-8), as test.py:124."""
    return (stack - stack.min()) / (stack.max() - stack.min() + 0.00000001)


def zoom_stack(stack: np.ndarray, size: int) -> np.ndarray:
    """``[D, h, w]`` -> ``[D, size, size]`` by cubic spline (unchanged when already that size)."""
    h, w = stack.shape[-2:]
    if (h, w) == (size, size):
        return stack
    return ndimage.zoom(stack, (1.0, size / h, size / w), order=3)


def zoom_back(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Probabilities ``[D, S, S, K+1]`` (the original's layout) -> ``[D, h, w, K+1]``, cubic."""
    s_h, s_w = probs.shape[1:3]
    if (s_h, s_w) == tuple(shape):
        return probs
    return ndimage.zoom(probs, (1.0, shape[0] / s_h, shape[1] / s_w, 1.0), order=3)


def original_stack(windowed: np.ndarray, centre: int, image_size: int, slices: int = SLICES) -> np.ndarray:
    """The model input for the stack centred on ``centre``: ``[slices, S, S]`` float32 in the
    original's orientation, min-max scaled and resized. ``windowed``: ``[z, y, x]`` from
    :func:`window_ct`. End slices are repeated past the volume (util_script_btcv.py:43)."""
    half = slices // 2
    idx = np.clip(np.arange(centre - half, centre - half + slices), 0, windowed.shape[0] - 1)
    stack = minmax_stack(to_original_orientation(windowed[idx]))
    return np.ascontiguousarray(zoom_stack(stack, image_size), dtype=np.float32)


def prepare_original(volume: np.ndarray, image_size: int, slices: int = SLICES, **ct) -> np.ndarray:
    """Every stack of a CT ``[z, y, x]`` (HU): ``[z, slices, S, S]`` float32. ``ct``: ``window``,
    ``mean``, ``std`` (default :data:`ORIGINAL_CT`). Holds all stacks: for small volumes and tests;
    the predictor builds them a batch at a time with :func:`original_stack`."""
    windowed = window_ct(volume, **{**ORIGINAL_CT, **ct})
    return np.stack([original_stack(windowed, c, image_size, slices) for c in range(volume.shape[0])])


def restore_original(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One stack's probabilities ``[slices, K+1, S, S]`` (model output, original orientation) ->
    ``[slices, K+1, h, w]`` in SimpleITK's orientation at the slice's size ``shape``."""
    back = zoom_back(np.moveaxis(probs, 1, -1), shape)
    return from_original_orientation(np.moveaxis(back, -1, 1))
