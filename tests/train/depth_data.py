"""A synthetic dataset whose two classes look the same in every slice: discs of one intensity,
class 1 running through every slice (a tube), class 2 a single slice thick. Only the third
dimension tells them apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.data.helpers import write_volume


def depth_volume(seed: int, shape=(20, 64, 64)):
    rng = np.random.default_rng(seed)
    d, h, w = shape
    label = np.zeros(shape, np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(6):
        r = rng.uniform(7, 11)
        cy, cx = rng.uniform(r + 2, h - r - 2), rng.uniform(r + 2, w - r - 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if rng.random() < 0.4:
            zs, cls = range(d), 1
        else:
            zs, cls = [int(rng.integers(1, d - 1))], 2
        for z in zs:
            if z < d:
                label[z][disc & (label[z] == 0)] = cls
    image = np.where(label > 0, 120.0, -60.0) + rng.normal(0, 25, shape)
    return image.astype(np.int16), label


def make_depth_dataset(root: Path, cases: int = 8) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(cases):
        image, label = depth_volume(i)
        write_volume(root / "imagesTr" / f"v{i:02d}_0000.nii.gz", image, (1.0, 1.0, 2.0))
        write_volume(root / "labelsTr" / f"v{i:02d}.nii.gz", label, (1.0, 1.0, 2.0))
    meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "long": 1, "thin": 2}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root
