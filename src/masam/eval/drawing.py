"""Drawing slices for people: radiological orientation, intensity window, contours of the
prediction and the reference.

Orientation convention (what ITK-SNAP and 3D Slicer show in their axial view): every volume is
reoriented with SimpleITK's ``DICOMOrient(image, "LPS")``, after which the numpy array
``[k, i, j]`` has ``j`` running from the patient's right to left, ``i`` from anterior to posterior
and ``k`` from inferior to superior. An axial slice ``array[k]`` drawn with row 0 at the top is
then anterior up, and the patient's right on the image's left. The reorientation only permutes
and flips axes (to the nearest ones for an oblique scan), so voxels are not resampled; the
in-plane spacing then sets the drawn aspect ratio. Video frames are shown as they are.

Below both ``masam predict`` (its ``--overlays``) and the HTML report (:mod:`.report`), which
draw the same panels.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from ..data.io import Volume
from .metrics import dice

# Class colours and contours, shared by the overlays of ``masam predict`` and the HTML report.
PALETTE = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
     [240, 50, 230], [210, 245, 60], [250, 190, 212], [0, 128, 128], [220, 190, 255]],
    dtype=np.uint8,
)  # fmt: skip


def contour(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


REFERENCE_COLOUR = (255, 255, 255)


def class_colour(c: int, colours: np.ndarray = PALETTE) -> tuple[int, int, int]:
    """The colour of class ``c`` (1-based; the palette repeats past its end)."""
    return tuple(int(v) for v in colours[(int(c) - 1) % len(colours)])


def radiological(array: np.ndarray, volume: Volume) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``array`` (the image's or a label map on the image's grid, ``[z, y, x]``) reoriented to LPS:
    ``[inferior->superior, anterior->posterior, right->left]``, with the spacing in that order
    (mm). Video: unchanged, unit spacing."""
    if volume.is_video:
        return array, (1.0, 1.0, 1.0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    oriented = sitk.DICOMOrient(image, "LPS")
    return sitk.GetArrayFromImage(oriented), tuple(reversed(oriented.GetSpacing()))


def intensity_window(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """Grey levels from the ``low``-th to the ``high``-th percentile of the volume."""
    lo, hi = np.percentile(array, [low, high])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def to_grey(image_slice: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Intensities mapped to [0, 1] through ``window`` (RGB frames: divided by 255)."""
    if image_slice.ndim == 3:
        return np.clip(image_slice.astype(np.float32) / 255.0, 0, 1)
    lo, hi = window
    return np.clip((image_slice.astype(np.float32) - lo) / (hi - lo), 0, 1)


def display_size(shape: tuple[int, int], pixel_mm: tuple[float, float], width: int) -> tuple[int, int]:
    """(rows, cols) of a drawing ``width`` pixels wide with square millimetres."""
    height_mm, width_mm = shape[0] * pixel_mm[0], shape[1] * pixel_mm[1]
    return max(1, round(width * height_mm / width_mm)), width


def resize_slice(array: np.ndarray, size: tuple[int, int], labels: bool = False) -> np.ndarray:
    """In-plane resize to ``size`` (rows, cols): nearest for labels, bilinear for grey/RGB in [0, 1]."""
    if array.shape[:2] == tuple(size):
        return array
    if labels:
        rows = (np.arange(size[0]) + 0.5) * array.shape[0] / size[0]
        cols = (np.arange(size[1]) + 0.5) * array.shape[1] / size[1]
        return array[rows.astype(int)[:, None], cols.astype(int)[None, :]]
    image = Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8))
    return np.asarray(image.resize((size[1], size[0]), Image.BILINEAR)).astype(np.float32) / 255.0


def render_overlay(
    image_slice: np.ndarray,
    pred_slice: np.ndarray | None,
    ref_slice: np.ndarray | None = None,
    colours: np.ndarray = PALETTE,
    ref_colour: tuple[int, int, int] = REFERENCE_COLOUR,
) -> np.ndarray:
    """One slice as an RGB ``[h, w, 3]`` uint8 drawing.

    ``image_slice``: ``[h, w]`` grey or ``[h, w, 3]`` RGB in [0, 1]; ``pred_slice``,
    ``ref_slice``: ``[h, w]`` class indices or None. The reference is a 2-pixel band across each
    class's border in ``ref_colour``; the prediction a 1-pixel inner contour in the class's
    colour on top, so where they agree the class colour runs along the reference band.
    """
    base = image_slice if image_slice.ndim == 3 else np.repeat(image_slice[..., None], 3, axis=-1)
    rgb = (np.clip(base, 0, 1) * 255).astype(np.uint8)
    if ref_slice is not None:
        for c in np.unique(ref_slice):
            if c > 0:
                mask = ref_slice == c
                rgb[contour(mask) | (ndimage.binary_dilation(mask) & ~mask)] = ref_colour
    if pred_slice is not None:
        for c in np.unique(pred_slice):
            if c > 0:
                rgb[contour(pred_slice == c)] = class_colour(c, colours)
    return rgb


def choose_slices(
    pred: np.ndarray, ref: np.ndarray | None, classes: Mapping[int, str], evenly: int = 3
) -> list[tuple[int, str]]:
    """``(slice index, why)`` to draw from label maps ``[n, h, w]``: per class (``{value: name}``)
    the slice of lowest 2D Dice where prediction or reference has it (without a reference: the
    largest predicted area; none where every slice is perfect), then ``evenly`` slices evenly spaced
    over the slices holding any class."""
    chosen: dict[int, list[str]] = {}
    for c, name in classes.items():
        p = (pred == c).reshape(len(pred), -1)
        r = (ref == c).reshape(len(pred), -1) if ref is not None else np.zeros_like(p)
        union = (p | r).sum(1)
        present = np.flatnonzero(union)
        if not len(present):
            continue
        if ref is None:
            s = int(present[np.argmax(union[present])])
            chosen.setdefault(s, []).append(f"largest {name}")
            continue
        scores = {int(i): dice(p[i], r[i]) for i in present}
        s = min(scores, key=lambda i: (scores[i], -union[i]))  # lowest Dice, then the largest extent
        if scores[s] < 1.0:  # a class drawn perfectly everywhere has no worst slice worth a panel
            chosen.setdefault(s, []).append(f"worst {name} (2D Dice {scores[s]:.2f})")
    any_fg = (pred > 0).reshape(len(pred), -1).any(1)
    if ref is not None:
        any_fg |= (ref > 0).reshape(len(ref), -1).any(1)
    span = np.flatnonzero(any_fg) if any_fg.any() else np.arange(len(pred))
    if evenly > 0:
        for s in np.unique(np.linspace(span[0], span[-1], evenly + 2)[1:-1].round().astype(int)):
            chosen.setdefault(int(s), []).append("evenly spaced")
    return [(s, "; ".join(chosen[s])) for s in sorted(chosen)]


def volume_panels(
    volume: Volume,
    pred: np.ndarray,
    ref: np.ndarray | None,
    classes: Mapping[int, str],
    width: int = 288,
    evenly: int = 3,
) -> list[tuple[np.ndarray, str]]:
    """RGB drawings ``[h, w, 3]`` of the slices :func:`choose_slices` picks, in radiological
    orientation, each with a caption. ``pred``, ``ref``: label maps on the image's grid (the
    image's array order); ``classes``: ``{value: name}``; ``width``: pixels per drawing."""
    image, spacing = radiological(volume.array, volume)
    pred, _ = radiological(pred, volume)
    ref = radiological(ref, volume)[0] if ref is not None else None
    window = intensity_window(image) if not volume.is_video else (0.0, 255.0)
    size = display_size(pred.shape[1:3], spacing[1:3], width)
    where = "frame" if volume.is_video else "axial slice"
    panels = []
    for s, why in choose_slices(pred, ref, classes, evenly):
        grey = resize_slice(to_grey(image[s], window), size)
        rgb = render_overlay(
            grey,
            resize_slice(pred[s], size, labels=True),
            resize_slice(ref[s], size, labels=True) if ref is not None else None,
        )
        panels.append((rgb, f"{where} {s + 1} of {len(pred)}: {why}"))
    return panels
