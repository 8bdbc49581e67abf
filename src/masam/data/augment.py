"""The paper's 2D augmentation, applied identically to every slice of a stack.

Per stack: with probability ``p_rot_flip`` a random 90° rotation and flip, otherwise with
probability ``p_rotate`` a rotation by up to ±``max_rotation`` degrees; then ``num_ops`` of
{shear, scale, translate, posterize, contrast, brightness, sharpness} (RandAugment style); gamma
with probability ``p_gamma``; random erasing with probability ``p_erase``. Geometric steps move
image (bilinear) and labels (nearest) with one sampling grid; intensity steps touch the image only.
All randomness comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

RAND_OPS = ("shear", "scale", "translate", "posterize", "contrast", "brightness", "sharpness")


@dataclass
class AugmentConfig:
    p_rot_flip: float = 0.5
    p_rotate: float = 0.5
    max_rotation: float = 15.0
    num_ops: int = 2
    max_shear: float = 0.3
    scale_range: tuple[float, float] = (0.8, 1.2)
    max_translate: float = 0.2
    posterize_bits: tuple[int, int] = (4, 8)
    enhance_range: tuple[float, float] = (0.5, 1.5)
    p_gamma: float = 0.5
    gamma_range: tuple[float, float] = (0.5, 3.5)
    p_erase: float = 0.25
    erase_area: tuple[float, float] = (0.02, 0.2)
    ops: tuple[str, ...] = RAND_OPS


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g).item()


def _chance(g: torch.Generator, p: float) -> bool:
    return p > 0 and torch.rand((), generator=g).item() < p


class StackAugmenter:
    """``(image [D, C, H, W] in [0, 1], label [D, H, W], generator) -> (image, label)``."""

    def __init__(self, config: AugmentConfig | None = None) -> None:
        self.config = config or AugmentConfig()

    def __call__(self, image: torch.Tensor, label: torch.Tensor, g: torch.Generator):
        c = self.config
        if _chance(g, c.p_rot_flip):
            k = int(torch.randint(4, (), generator=g))
            image, label = image.rot90(k, (-2, -1)), label.rot90(k, (-2, -1))
            axis = -1 - int(torch.randint(2, (), generator=g))
            image, label = image.flip(axis), label.flip(axis)
        angle = math.radians(_uniform(g, -c.max_rotation, c.max_rotation)) if _chance(g, c.p_rotate) else 0.0
        chosen = torch.randperm(len(c.ops), generator=g)[: c.num_ops].tolist() if c.ops else []
        ops = [c.ops[i] for i in chosen]

        affine = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        shift = torch.zeros(2)
        if "shear" in ops:
            affine = affine @ torch.tensor([[1.0, _uniform(g, -c.max_shear, c.max_shear)], [0.0, 1.0]])
        if "scale" in ops:
            affine = affine / _uniform(g, *c.scale_range)  # the grid maps output to input: 1/s zooms by s
        if "translate" in ops:
            shift = torch.tensor([_uniform(g, -c.max_translate, c.max_translate) * 2 for _ in range(2)])
        if angle or {"shear", "scale", "translate"} & set(ops):
            image, label = _warp(image, label, affine, shift)

        for op in ops:
            if op == "posterize":
                levels = 2 ** int(torch.randint(c.posterize_bits[0], c.posterize_bits[1] + 1, (), generator=g))
                image = torch.floor(image * (levels - 1) + 0.5) / (levels - 1)
            elif op == "contrast":
                image = _blend(image.mean(), image, _uniform(g, *c.enhance_range))
            elif op == "brightness":
                image = image * _uniform(g, *c.enhance_range)
            elif op == "sharpness":
                image = _blend(_smooth(image), image, _uniform(g, *c.enhance_range))
        image = image.clamp(0, 1)
        if _chance(g, c.p_gamma):
            image = image.pow(_uniform(g, *c.gamma_range))
        if _chance(g, c.p_erase):
            image = _erase(image, g, c.erase_area)
        return image.contiguous(), label.contiguous()


def _warp(image: torch.Tensor, label: torch.Tensor, affine: torch.Tensor, shift: torch.Tensor):
    d, ch, h, w = image.shape
    theta = torch.cat([affine, shift[:, None]], dim=1)[None].to(image.dtype)
    # One grid for the whole stack: slices (and channels) are sampled as channels of one image.
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    image = F.grid_sample(image.reshape(1, d * ch, h, w), grid, mode="bilinear", align_corners=False)
    moved = F.grid_sample(label[None].float(), grid, mode="nearest", align_corners=False)
    return image.reshape(d, ch, h, w), moved[0].round().to(label.dtype)


def _blend(degenerate: torch.Tensor, image: torch.Tensor, factor: float) -> torch.Tensor:
    return (degenerate + factor * (image - degenerate)).clamp(0, 1)


def _smooth(image: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (3x3 ones with 5 at the centre, / 13), border pixels kept."""
    box_sum = 9 * F.avg_pool2d(image, 3, stride=1, padding=1)
    out = (box_sum + 4 * image) / 13
    out[..., 0, :], out[..., -1, :] = image[..., 0, :], image[..., -1, :]
    out[..., :, 0], out[..., :, -1] = image[..., :, 0], image[..., :, -1]
    return out


def _erase(image: torch.Tensor, g: torch.Generator, area_range: tuple[float, float]) -> torch.Tensor:
    h, w = image.shape[-2:]
    area = _uniform(g, *area_range) * h * w
    aspect = math.exp(_uniform(g, math.log(0.3), math.log(1 / 0.3)))
    eh, ew = min(h, max(1, round(math.sqrt(area * aspect)))), min(w, max(1, round(math.sqrt(area / aspect))))
    top = int(torch.randint(h - eh + 1, (), generator=g))
    left = int(torch.randint(w - ew + 1, (), generator=g))
    image = image.clone()
    image[..., top : top + eh, left : left + ew] = 0.0
    return image
