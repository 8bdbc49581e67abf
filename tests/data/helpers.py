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


def make_btcv_raw(root: Path, ids=("0001", "0002", "0035", "0040")) -> Path:
    """The Synapse BTCV layout ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz`` with labels 13, 12 and 6."""
    (root / "img").mkdir(parents=True)
    (root / "label").mkdir()
    for i, case in enumerate(ids):
        label = np.zeros((4, 10, 12), np.uint8)
        label[1, 2:5, 3:6] = 13
        label[2, 4:8, 1:4] = 12
        label[3, 0:2, 0:2] = 6
        write_volume(root / "img" / f"img{case}.nii.gz", np.full((4, 10, 12), i, np.int16), (0.7, 0.7, 2.5))
        write_volume(root / "label" / f"label{case}.nii.gz", label, (0.7, 0.7, 2.5))
    return root


def make_prostate_raw(root: Path) -> Path:
    """Two sites of the multi-site prostate layout ``SITE/CaseXX.nii.gz`` + ``CaseXX_segmentation.nii.gz``."""
    for site, cases, seg in (("UCL", ("01", "26", "32"), "segmentation"), ("BMC", ("00", "03"), "Segmentation")):
        (root / site).mkdir(parents=True)
        for case in cases:
            label = np.zeros((3, 8, 8), np.uint8)
            label[1, 2:6, 2:6] = 2  # a zonal label: the original binarises it
            label[2, 3:4, 3:4] = 1
            image = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
            write_volume(root / site / f"Case{case}.nii.gz", image)
            write_volume(root / site / f"Case{case}_{seg}.nii.gz", label)
    return root


def make_endovis_raw(root: Path, colours: list) -> Path:
    """EndoVis'18 ``Train|Test/seq_N/left_frames|labels`` with every colour of ``colours`` once per frame."""
    for part, seqs in (("Train", (1, 2)), ("Test", (1,))):
        for s in seqs:
            frames, labels = root / part / f"seq_{s}" / "left_frames", root / part / f"seq_{s}" / "labels"
            frames.mkdir(parents=True)
            labels.mkdir(parents=True)
            for t in range(3):
                rgb = np.zeros((6, 8, 3), np.uint8)
                for k in range(len(colours)):  # every class once: pixel k + t of the flattened frame
                    rgb.reshape(-1, 3)[k + t] = colours[k]
                Image.fromarray(rgb).save(labels / f"frame{t:03d}.png")
                Image.fromarray(np.full((6, 8, 3), 40 * t, np.uint8)).save(frames / f"frame{t:03d}.png")
    return root
