"""A literal re-implementation (our own code) of the original MA-SAM augmentation ops
(``MA-SAM/datasets/dataset.py``), in its layout: image ``[H, W, D]`` float32 in [0, 1], label
``[H, W, D]`` float32, slices last, ops looping over slices like the original. Used only to check
``masam.data.augment`` against. Line numbers refer to dataset.py at the mirrored commit."""

from __future__ import annotations

import numpy as np
import PIL.Image
import PIL.ImageEnhance
import PIL.ImageOps
from scipy import ndimage


def to_pil(img):  # dataset.py:43-48
    return PIL.Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))


def to_np(img):  # dataset.py:53-54
    return np.array(img).astype(np.float32) / 255


def rot_flip(image, label, k, axis):  # dataset.py:28-35, with the draws given
    image = np.rot90(image, k, axes=(0, 1))
    label = np.rot90(label, k, axes=(0, 1))
    return np.flip(image, axis=axis).copy(), np.flip(label, axis=axis).copy()


def rotate(image, label, angle):  # dataset.py:37-41
    return ndimage.rotate(image, angle, order=0, reshape=False), ndimage.rotate(label, angle, order=0, reshape=False)


def adjust_light(image, label, gamma):  # dataset.py:155-166, gamma given
    image = image * 255.0
    table = np.array([((i / 255.0) ** (1.0 / gamma)) * 255 for i in np.arange(0, 256)]).astype(np.uint8)
    for s in range(image.shape[2]):
        image[:, :, s] = table[np.array(image[:, :, s]).astype(np.uint8)]  # cv2.LUT on uint8
    return image / 255.0, label


def random_erasing(imgs, label, sy, sx, filling):  # dataset.py:59-94 after the draws
    ny, nx = filling.shape
    imgs[sy : sy + ny, sx : sx + nx, :] = np.repeat(filling[:, :, None], imgs.shape[-1], axis=-1)
    label[sy : sy + ny, sx : sx + nx, :] = 0.0
    return imgs, label


def _enhance(img, label, fn):
    for s in range(img.shape[2]):
        img[:, :, s] = to_np(fn(to_pil(img[:, :, s])))
    return img, label


def posterize(img, label, v):  # dataset.py:96-109
    return _enhance(img, label, lambda im: PIL.ImageOps.posterize(im, bits=int(v)))


def contrast(img, label, v):  # dataset.py:111-123
    return _enhance(img, label, lambda im: PIL.ImageEnhance.Contrast(im).enhance(v))


def brightness(img, label, v):  # dataset.py:125-137
    return _enhance(img, label, lambda im: PIL.ImageEnhance.Brightness(im).enhance(v))


def sharpness(img, label, v):  # dataset.py:139-150
    return _enhance(img, label, lambda im: PIL.ImageEnhance.Sharpness(im).enhance(v))


def identity(img, label, v):  # dataset.py:152-153
    return img, label


def _affine(img, label, mat):
    for s in range(img.shape[2]):
        moved = to_pil(img[:, :, s]).transform(
            to_pil(img[:, :, s]).size, PIL.Image.AFFINE, mat, resample=PIL.Image.BILINEAR
        )
        img[:, :, s] = to_np(moved)
    for s in range(label.shape[2]):
        lab = PIL.Image.fromarray(label[:, :, s].astype(np.uint8))
        label[:, :, s] = np.array(lab.transform(lab.size, PIL.Image.AFFINE, mat, resample=PIL.Image.NEAREST)).astype(
            np.float32
        )
    return img, label


def shear_x(img, label, v):  # dataset.py:168-190
    return _affine(img, label, [1, v, -v * img.shape[1] / 2, 0, 1, 0])


def shear_y(img, label, v):  # dataset.py:192-214
    return _affine(img, label, [1, 0, 0, v, 1, -v * img.shape[0] / 2])


def translate_x(img, label, v):  # dataset.py:216-236
    return _affine(img, label, [1, 0, v * img.shape[1], 0, 1, 0])


def translate_y(img, label, v):  # dataset.py:238-258
    return _affine(img, label, [1, 0, 0, 0, 1, v * img.shape[0]])


def scale(img, label, v):  # dataset.py:260-278
    return _affine(img, label, [v, 0, 0, 0, v, 0])


OPS = {
    f.__name__: f
    for f in (shear_x, shear_y, scale, translate_x, translate_y, posterize, contrast, brightness, sharpness, identity)
}


def original_layout(image_dchw: np.ndarray, label_dhw: np.ndarray, frame: str = "volume"):
    """masam's ``[D, 1, H, W]`` / ``[D, H, W]`` -> the original's ``[H, W, D]`` in its orientation
    (volume: turned by 180°)."""
    img, lab = image_dchw[:, 0], label_dhw
    if frame == "volume":
        img, lab = img[:, ::-1, ::-1], lab[:, ::-1, ::-1]
    return np.ascontiguousarray(np.moveaxis(img, 0, -1)), np.ascontiguousarray(
        np.moveaxis(lab, 0, -1).astype(np.float32)
    )


def masam_layout(image_hwd: np.ndarray, label_hwd: np.ndarray, frame: str = "volume"):
    img, lab = np.moveaxis(image_hwd, -1, 0), np.moveaxis(label_hwd, -1, 0)
    if frame == "volume":
        img, lab = img[:, ::-1, ::-1], lab[:, ::-1, ::-1]
    return np.ascontiguousarray(img[:, None]), np.ascontiguousarray(lab)


ALL_OPS = list(OPS)  # dataset.py:299-310, in the original's order
BOX_VARIANT_OPS = ["posterize", "contrast", "brightness", "sharpness", "identity"]  # dataset_bbox.py:362-386
RANGES = {  # dataset.py:288-294, identity (0, 1): dataset.py:309
    "shear_x": (-0.3, 0.3), "shear_y": (-0.3, 0.3), "scale": (0.8, 1.2), "translate_x": (-0.2, 0.2),
    "translate_y": (-0.2, 0.2), "posterize": (4, 8.99), "contrast": (0.7, 1.3), "brightness": (0.7, 1.3),
    "sharpness": (0.1, 1.9), "identity": (0, 1),
}  # fmt: skip


def pipeline(image, label, rng: np.random.Generator, ops=ALL_OPS, erasing=True):
    """``RandomGenerator.__call__`` (dataset.py:314-333) before resizing, with every draw taken from
    one generator in the order masam draws them (the original spread them over ``random``,
    ``np.random`` and a generator seeded 42)."""
    if rng.random() < 0.5:
        k = rng.integers(0, 4)
        image, label = rot_flip(image, label, k, rng.integers(0, 2))
    if rng.random() < 0.5:
        image, label = rotate(image, label, rng.integers(-15, 15))
    if rng.random() < 0.5:
        image, label = adjust_light(image, label, rng.random() * 3 + 0.5)
    if rng.random() < 0.5 and erasing:  # masam draws the chance in both variants
        h, w = image.shape[:2]
        while True:
            se = rng.uniform(0.02, 0.05) * h * w
            re = rng.uniform(0.3, 3.3)
            nx, ny = int(np.sqrt(se * re)), int(np.sqrt(se / re))
            if nx < w and ny < h:
                break
        sy = rng.integers(0, h - ny + 1)
        sx = rng.integers(0, w - nx + 1)
        image, label = random_erasing(image, label, sy, sx, rng.uniform(0, 1, size=[ny, nx]))
    for i in rng.choice(len(ops), size=2, replace=False):
        v = rng.uniform(*RANGES[ops[i]])
        image, label = OPS[ops[i]](image, label, v)
    return image, label
