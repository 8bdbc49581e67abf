"""The original MA-SAM's 2D augmentation, op for op (``MA-SAM/datasets/dataset.py``).

Per stack, in this order (each draw made once per stack and applied to every slice):

1. p 0.5: rotate by ``k`` x 90° (k in 0..3) and then flip rows or columns (dataset.py:28-35).
2. p 0.5: rotate by an integer angle in [-15, 14]° with nearest-neighbour interpolation, image
   and labels alike, corners filled with 0 (dataset.py:37-41).
3. p 0.5: gamma ``x -> x^(1/γ)``, γ uniform in [0.5, 3.5), through an 8-bit table (dataset.py:155-166).
4. p 0.5: random erasing: area 2-5 % of the slice, aspect uniform in [0.3, 3.3], filled with
   uniform noise (one noise patch for every slice), labels under the box set to 0 (dataset.py:59-94).
5. Two different ops out of ten (RandAugment), each with a value uniform in its range: shear x,
   shear y (±0.3, about the centre), scale (0.8-1.2 about the top-left corner), translate x,
   translate y (±0.2 of the size), posterize (4-8 bits), contrast, brightness (0.7-1.3),
   sharpness (0.1-1.9), identity (dataset.py:168-312, 326-333).

Every op except identity, rot/flip and rotation goes through Pillow in 8 bits, as the original
does (values are truncated to ``uint8`` on the way in). Geometric ops move labels with nearest
neighbour. ``policy="original-box"`` is the box-prompted variant (``dataset_bbox.py``): no erasing,
no shear/scale/translate (dataset_bbox.py:362-364, 392-406).

The original applied these ops to slices in its own in-plane orientation, which is not masam's
(see :mod:`masam.data.convention`): the stack is turned into that orientation, augmented, and
turned back, so that the corner the scale op is anchored to is the original's. All randomness
comes from the ``torch.Generator`` passed in (per-sample seeding, independent of workers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps
from scipy import ndimage

RAND_OPS = (
    "shear_x",
    "shear_y",
    "scale",
    "translate_x",
    "translate_y",
    "posterize",
    "contrast",
    "brightness",
    "sharpness",
    "identity",
)
GEOMETRIC_OPS = ("shear_x", "shear_y", "scale", "translate_x", "translate_y")
BOX_OPS = tuple(op for op in RAND_OPS if op not in GEOMETRIC_OPS)
POLICIES = ("masam", "original", "original-box")
FRAMES = ("auto", "volume", "video", "none")


@dataclass
class AugmentConfig:
    """The original's values (dataset.py:286-294). ``ops``/``p_erase`` default to the policy's.

    ``frame``: in-plane orientation the ops run in: ``volume`` (the original's slices are
    SimpleITK's turned by 180°), ``video`` (frames anti-transposed), ``none`` (as given) or
    ``auto`` (``video`` for 3-channel stacks, else ``volume``).
    """

    policy: str = "original"
    p_rot_flip: float = 0.5
    p_rotate: float = 0.5
    rotation: tuple[int, int] = (-15, 15)  # integer degrees, high end excluded (np.random.randint)
    p_gamma: float = 0.5
    gamma_range: tuple[float, float] = (0.5, 3.5)
    p_erase: float | None = None
    erase_area: tuple[float, float] = (0.02, 0.05)
    erase_aspect: tuple[float, float] = (0.3, 3.3)
    num_ops: int = 2
    ops: tuple[str, ...] | None = None
    shear: tuple[float, float] = (-0.3, 0.3)
    scale: tuple[float, float] = (0.8, 1.2)
    translate: tuple[float, float] = (-0.2, 0.2)
    posterize: tuple[float, float] = (4.0, 8.99)
    contrast: tuple[float, float] = (0.7, 1.3)
    brightness: tuple[float, float] = (0.7, 1.3)
    sharpness: tuple[float, float] = (0.1, 1.9)
    frame: str = "auto"

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"augmentation policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if self.frame not in FRAMES:
            raise ValueError(f"augmentation frame must be one of {', '.join(FRAMES)}, got {self.frame!r}")
        box = self.policy == "original-box"
        if self.ops is None:
            self.ops = BOX_OPS if box else RAND_OPS
        unknown = [op for op in self.ops if op not in RAND_OPS]
        if unknown:
            raise ValueError(f"unknown augmentation ops {unknown}: choose from {', '.join(RAND_OPS)}")
        if self.p_erase is None:
            self.p_erase = 0.0 if box else 0.5

    def op_range(self, op: str) -> tuple[float, float]:
        """The uniform range the value of a RandAugment op is drawn from."""
        if op == "identity":
            return (0.0, 1.0)
        return getattr(self, op.split("_")[0])


# ---------------------------------------------------------------- the ops, on numpy stacks
# image [D, C, H, W] float32 in [0, 1] (C = 1 grey or 3 RGB), label [D, H, W] uint8, both in the
# original's orientation. Each op returns new arrays.


def _to_pil(plane: np.ndarray) -> Image.Image:
    """``[C, H, W]`` in [0, 1] -> 8-bit image, truncating like the original's ``convert_to_PIL``."""
    pixels = (np.clip(plane, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))


def _from_pil(image: Image.Image, channels: int) -> np.ndarray:
    pixels = np.asarray(image).astype(np.float32) / 255
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def per_slice(image: np.ndarray, fn: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    """``fn`` applied to each slice as an 8-bit Pillow image."""
    return np.stack([_from_pil(fn(_to_pil(plane)), image.shape[1]) for plane in image])


def affine(image: np.ndarray, label: np.ndarray, matrix: tuple[float, ...]):
    """Pillow's affine transform (``matrix`` maps output to input pixels): image bilinear, labels
    nearest, both filled with 0 outside."""
    size = (image.shape[-1], image.shape[-2])
    moved = per_slice(image, lambda im: im.transform(size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR))
    labels = [
        np.asarray(Image.fromarray(plane).transform(size, Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST))
        for plane in label
    ]
    return moved, np.stack(labels)


def shear_x(image, label, v: float):
    return affine(image, label, (1, v, -v * image.shape[-1] / 2, 0, 1, 0))


def shear_y(image, label, v: float):
    return affine(image, label, (1, 0, 0, v, 1, -v * image.shape[-2] / 2))


def scale(image, label, v: float):
    return affine(image, label, (v, 0, 0, 0, v, 0))


def translate_x(image, label, v: float):
    return affine(image, label, (1, 0, v * image.shape[-1], 0, 1, 0))


def translate_y(image, label, v: float):
    return affine(image, label, (1, 0, 0, 0, 1, v * image.shape[-2]))


def posterize(image, label, v: float):
    return per_slice(image, lambda im: ImageOps.posterize(im, int(v))), label


def contrast(image, label, v: float):
    return per_slice(image, lambda im: ImageEnhance.Contrast(im).enhance(v)), label


def brightness(image, label, v: float):
    return per_slice(image, lambda im: ImageEnhance.Brightness(im).enhance(v)), label


def sharpness(image, label, v: float):
    return per_slice(image, lambda im: ImageEnhance.Sharpness(im).enhance(v)), label


def identity(image, label, v: float):  # noqa: ARG001 - one signature for every op
    return image, label


OPS: dict[str, Callable] = {name: globals()[name] for name in RAND_OPS}


def rot_flip(image: np.ndarray, label: np.ndarray, k: int, axis: int):
    """``k`` quarter turns (rows towards columns, ``np.rot90``) then a flip of rows (0) or columns (1)."""
    image, label = np.rot90(image, k, axes=(-2, -1)), np.rot90(label, k, axes=(-2, -1))
    return np.flip(image, axis - 2).copy(), np.flip(label, axis - 2).copy()


def rotate(image: np.ndarray, label: np.ndarray, angle: float):
    """``scipy.ndimage.rotate`` in the slice plane, nearest neighbour, same size, 0 outside."""
    turn = dict(angle=angle, axes=(-1, -2), order=0, reshape=False)
    return ndimage.rotate(image, **turn), ndimage.rotate(label, **turn)


def gamma(image: np.ndarray, label: np.ndarray, value: float):
    """``x -> x^(1/value)`` through the original's 8-bit lookup table (truncating both ways)."""
    table = (((np.arange(256) / 255.0) ** (1.0 / value)) * 255).astype(np.uint8)
    return table[(image * np.float32(255.0)).astype(np.uint8)].astype(np.float32) / np.float32(255.0), label


def erase(image: np.ndarray, label: np.ndarray, top: int, left: int, fill: np.ndarray):
    """Write ``fill`` ``[h, w]`` into every slice (and channel) at (top, left); labels there -> 0."""
    image, label = image.copy(), label.copy()
    h, w = fill.shape
    image[..., top : top + h, left : left + w] = fill.astype(np.float32)
    label[..., top : top + h, left : left + w] = 0
    return image, label


def erase_box(rng: np.random.Generator, height: int, width: int, area, aspect) -> tuple[int, int, int, int]:
    """(top, left, h, w) drawn as the original does: area and aspect uniform, redrawn until the box
    fits, position uniform (dataset.py:73-83)."""
    while True:
        target = rng.uniform(*area) * height * width
        ratio = rng.uniform(*aspect)
        w, h = int(np.sqrt(target * ratio)), int(np.sqrt(target / ratio))
        if w < width and h < height:
            break
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    return top, left, h, w


# ---------------------------------------------------------------- orientation and the pipeline


def _frame(array: np.ndarray, frame: str) -> np.ndarray:
    """The in-plane turn between masam's slices and the original's (its own inverse)."""
    if frame == "volume":
        return array[..., ::-1, ::-1]
    if frame == "video":
        return np.swapaxes(array, -1, -2)[..., ::-1, ::-1]
    return array


def draw_ops(rng: np.random.Generator, config: AugmentConfig) -> list[tuple[str, float]]:
    """The RandAugment ops and their values, in the original's order of draws."""
    chosen = rng.choice(len(config.ops), size=min(config.num_ops, len(config.ops)), replace=False)
    return [(config.ops[i], float(rng.uniform(*config.op_range(config.ops[i])))) for i in chosen]


def augment_arrays(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, config: AugmentConfig):
    """The whole pipeline on arrays already in the original's orientation (see module docstring)."""
    c = config
    if rng.random() < c.p_rot_flip:
        image, label = rot_flip(image, label, int(rng.integers(0, 4)), int(rng.integers(0, 2)))
    if rng.random() < c.p_rotate:
        image, label = rotate(image, label, int(rng.integers(*c.rotation)))
    if rng.random() < c.p_gamma:
        image, label = gamma(image, label, rng.random() * (c.gamma_range[1] - c.gamma_range[0]) + c.gamma_range[0])
    if rng.random() < c.p_erase:
        top, left, h, w = erase_box(rng, image.shape[-2], image.shape[-1], c.erase_area, c.erase_aspect)
        image, label = erase(image, label, top, left, rng.uniform(0, 1, size=(h, w)))
    for name, value in draw_ops(rng, c):
        image, label = OPS[name](image, label, value)
    return image, label


class StackAugmenter:
    """``(image [D, C, H, W] in [0, 1], label [D, H, W], generator) -> (image, label)``."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def __call__(self, image: torch.Tensor, label: torch.Tensor, g: torch.Generator):
        if self.config.policy == "masam":
            return masam_augment(image, label, g, MasamAugment())
        frame = self.config.frame
        if frame == "auto":
            frame = "video" if image.shape[1] == 3 else "volume"
        seed = int(torch.randint(0, 2**62, (), generator=g))
        if label.numel() and int(label.max()) > 255:
            raise ValueError(f"augmentation handles label values up to 255, got {int(label.max())}")
        img = _frame(image.numpy().astype(np.float32), frame)
        lab = _frame(label.numpy().astype(np.uint8), frame)
        img, lab = augment_arrays(
            np.ascontiguousarray(img), np.ascontiguousarray(lab), np.random.default_rng(seed), self.config
        )
        img, lab = _frame(img, frame), _frame(lab, frame)
        return torch.from_numpy(np.ascontiguousarray(img)), torch.from_numpy(lab.astype(np.int64))


# ---------------------------------------------------------------- masam's own policy
# Measured on real data (docs/learning.md): a model trained from scratch learns from it where the
# original's policy stops it learning. Computed in float on the tensors (no 8-bit round trip), one
# sampling grid for the rotation and the geometric ops together.


@dataclass(frozen=True)
class MasamAugment:
    """Per stack: p ``p_rot_flip`` quarter turns and a flip; p ``p_rotate`` a rotation within
    ``±max_rotation``°; ``num_ops`` of :data:`MASAM_OPS` (shear, scale and translate share the
    rotation's grid); p ``p_gamma`` ``x -> x^γ``; p ``p_erase`` a box set to 0 (labels kept)."""

    p_rot_flip: float = 0.5
    p_rotate: float = 0.5
    max_rotation: float = 15.0
    num_ops: int = 2
    max_shear: float = 0.3
    scale: tuple[float, float] = (0.8, 1.2)
    max_translate: float = 0.2
    posterize_bits: tuple[int, int] = (4, 8)
    enhance: tuple[float, float] = (0.5, 1.5)
    p_gamma: float = 0.5
    gamma: tuple[float, float] = (0.5, 3.5)
    p_erase: float = 0.25
    erase_area: tuple[float, float] = (0.02, 0.2)


MASAM_OPS = ("shear", "scale", "translate", "posterize", "contrast", "brightness", "sharpness")


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g).item()


def _chance(g: torch.Generator, p: float) -> bool:
    return p > 0 and torch.rand((), generator=g).item() < p


def masam_augment(image: torch.Tensor, label: torch.Tensor, g: torch.Generator, c: MasamAugment):
    """``image [D, C, H, W]`` in [0, 1], ``label [D, H, W]`` -> both augmented alike."""
    if _chance(g, c.p_rot_flip):
        k = int(torch.randint(4, (), generator=g))
        axis = -1 - int(torch.randint(2, (), generator=g))
        image, label = image.rot90(k, (-2, -1)).flip(axis), label.rot90(k, (-2, -1)).flip(axis)
    angle = np.radians(_uniform(g, -c.max_rotation, c.max_rotation)) if _chance(g, c.p_rotate) else 0.0
    ops = [MASAM_OPS[i] for i in torch.randperm(len(MASAM_OPS), generator=g)[: c.num_ops].tolist()]
    matrix = torch.tensor([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], dtype=torch.float32)
    shift = torch.zeros(2)
    if "shear" in ops:
        matrix = matrix @ torch.tensor([[1.0, _uniform(g, -c.max_shear, c.max_shear)], [0.0, 1.0]])
    if "scale" in ops:
        matrix = matrix / _uniform(g, *c.scale)  # the grid maps output to input: 1/s zooms by s
    if "translate" in ops:
        shift = torch.tensor([_uniform(g, -c.max_translate, c.max_translate) * 2 for _ in range(2)])
    if angle or {"shear", "scale", "translate"} & set(ops):
        image, label = _warp(image, label, matrix, shift)
    for op in ops:
        image = _intensity(image, op, g, c)
    image = image.clamp(0, 1)
    if _chance(g, c.p_gamma):
        image = image.pow(_uniform(g, *c.gamma))
    if _chance(g, c.p_erase):
        image = _erase_zero(image, g, c.erase_area)
    return image.contiguous(), label.contiguous()


def _intensity(image: torch.Tensor, op: str, g: torch.Generator, c: MasamAugment) -> torch.Tensor:
    if op == "posterize":
        levels = 2 ** int(torch.randint(c.posterize_bits[0], c.posterize_bits[1] + 1, (), generator=g))
        return torch.floor(image * (levels - 1) + 0.5) / (levels - 1)
    if op == "contrast":
        return _blend(image.mean(), image, _uniform(g, *c.enhance))
    if op == "brightness":
        return image * _uniform(g, *c.enhance)
    if op == "sharpness":
        return _blend(_smooth(image), image, _uniform(g, *c.enhance))
    return image


def _warp(image: torch.Tensor, label: torch.Tensor, matrix: torch.Tensor, shift: torch.Tensor):
    """One affine grid for the whole stack: image bilinear, labels nearest, 0 outside."""
    d, ch, h, w = image.shape
    theta = torch.cat([matrix, shift[:, None]], dim=1)[None].to(image.dtype)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, h, w], align_corners=False)
    sample = torch.nn.functional.grid_sample
    moved = sample(image.reshape(1, d * ch, h, w), grid, mode="bilinear", align_corners=False)
    labels = sample(label[None].float(), grid, mode="nearest", align_corners=False)
    return moved.reshape(d, ch, h, w), labels[0].round().to(label.dtype)


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: float) -> torch.Tensor:
    return (degenerate + factor * (image - degenerate)).clamp(0, 1)


def _smooth(image: torch.Tensor) -> torch.Tensor:
    """Pillow's SMOOTH kernel (3x3 ones, 5 at the centre, / 13); border pixels kept."""
    box_sum = 9 * torch.nn.functional.avg_pool2d(image, 3, stride=1, padding=1)
    out = (box_sum + 4 * image) / 13
    out[..., 0, :], out[..., -1, :] = image[..., 0, :], image[..., -1, :]
    out[..., :, 0], out[..., :, -1] = image[..., :, 0], image[..., :, -1]
    return out


def _erase_zero(image: torch.Tensor, g: torch.Generator, area_range: tuple[float, float]) -> torch.Tensor:
    h, w = image.shape[-2:]
    area = _uniform(g, *area_range) * h * w
    aspect = np.exp(_uniform(g, np.log(0.3), np.log(1 / 0.3)))
    eh, ew = min(h, max(1, round(np.sqrt(area * aspect)))), min(w, max(1, round(np.sqrt(area / aspect))))
    top = int(torch.randint(h - eh + 1, (), generator=g))
    left = int(torch.randint(w - ew + 1, (), generator=g))
    image = image.clone()
    image[..., top : top + eh, left : left + ew] = 0.0
    return image
