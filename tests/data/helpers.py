"""Small synthetic datasets in the nnU-Net layout, written to a temporary folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image


def write_volume(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def phantom(shape=(12, 40, 48), seed=0):
    """A CT-like volume ``[z, y, x]`` (HU) with two blob organs, and its labels."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    label = np.zeros(shape, np.uint8)
    c = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    label[((z - c[0]) / 5) ** 2 + ((y - c[1]) / 10) ** 2 + ((x - c[2] + 8) / 8) ** 2 < 1] = 1
    label[((z - c[0]) / 4) ** 2 + ((y - c[1] + 5) / 6) ** 2 + ((x - c[2] - 12) / 6) ** 2 < 1] = 2
    image = np.where(label == 1, 60, np.where(label == 2, 150, -100)) + rng.normal(0, 10, shape)
    return image.astype(np.int16), label


def make_dataset(root: Path, cases=4, shape=(12, 40, 48), spacing=(1.0, 1.0, 3.0), modality="CT") -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(cases):
        image, label = phantom(shape, seed=i)
        write_volume(root / "imagesTr" / f"case{i:02d}_0000.nii.gz", image, spacing)
        write_volume(root / "labelsTr" / f"case{i:02d}.nii.gz", label, spacing)
    meta = {
        "channel_names": {"0": modality},
        "labels": {"background": 0, "organ_a": 1, "organ_b": 2},
        "file_ending": ".nii.gz",
        "numTraining": cases,
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_video_dataset(root: Path, sequences=2, frames=6, size=(32, 40)) -> Path:
    for seq in range(sequences):
        img_dir, lab_dir = root / "imagesTr" / f"seq{seq}", root / "labelsTr" / f"seq{seq}"
        img_dir.mkdir(parents=True)
        lab_dir.mkdir(parents=True)
        for t in range(frames):
            label = np.zeros(size, np.uint8)
            label[5 + t : 15 + t, 10:20] = 1
            label[20:28, 25 + seq : 35] = 2
            rgb = np.stack([label * 80, np.full(size, 30 + t, np.uint8), 255 - label * 60], -1).astype(np.uint8)
            Image.fromarray(rgb).save(img_dir / f"frame{t}.png")
            Image.fromarray(label).save(lab_dir / f"frame{t}.png")
    meta = {"channel_names": {"0": "RGB"}, "labels": {"background": 0, "tool": 1, "tissue": 2}, "file_ending": ".png"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
