"""PNG slices with coloured class contours, for a person to look at a prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import atomic_path

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


def save_overlays(grey: np.ndarray, labels: np.ndarray, out_dir: Path, case: str, count: int = 3) -> list[Path]:
    """``grey`` ``[S, h, w]`` (or ``[S, h, w, 3]``) in [0, 1], ``labels`` ``[S, h, w]``: writes the
    ``count`` slices with the most foreground (evenly spaced if none) as ``CASE_sliceNNN.png``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    area = (labels > 0).reshape(labels.shape[0], -1).sum(1)
    if area.max() > 0:
        chosen = sorted(np.argsort(-area, kind="stable")[:count].tolist())
    else:
        chosen = np.linspace(0, labels.shape[0] - 1, min(count, labels.shape[0])).round().astype(int).tolist()
    written = []
    for s in chosen:
        base = grey[s] if grey.ndim == 4 else np.repeat(grey[s][..., None], 3, axis=-1)
        rgb = (np.clip(base, 0, 1) * 255).astype(np.uint8)
        for c in np.unique(labels[s]):
            if c == 0:
                continue
            rgb[contour(labels[s] == c)] = PALETTE[(int(c) - 1) % len(PALETTE)]
        path = out_dir / f"{case}_slice{s:03d}.png"
        with atomic_path(path) as tmp:
            Image.fromarray(rgb).save(tmp, format="PNG")
        written.append(path)
    return written
