"""Training stacks from a preprocessed cache."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from ..run_folder import CacheFolder
from ..spec import SLICES
from .augment import StackAugmenter
from .convention import turn_original
from .normalize import scale_stacks
from .slices import stack_indices


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation: a function of (seed, epoch, index) alone, so the
    stream is reproducible, independent of worker count and different for every sample."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class StackDataset(TorchDataset):
    """Every slice of the given cases as the centre of a ``slices``-deep stack.

    Item: ``{"image": [D, 3, S, S] float32, "label": [D, S, S] int64, "case": str, "slice": int}``;
    grey slices are repeated to 3 channels. Arrays are memory-mapped, so workers share them.
    """

    def __init__(
        self,
        cache: str | os.PathLike,
        cases: list[str] | None = None,
        slices: int = SLICES,
        augment: StackAugmenter | None = None,
        seed: int = 0,
        stack_minmax: bool = False,
        orientation: str = "masam",
    ) -> None:
        folder = CacheFolder(cache)
        self.cache = folder.path
        plan = json.loads(folder.plan_file.read_text())
        self.cases = list(cases) if cases is not None else plan["cases"]
        self.slices = slices
        self.augment = augment
        self.seed = seed
        self.stack_minmax = stack_minmax  # each stack scaled by its own range before augmentation (the original's)
        self.orientation = orientation  # "original": the network sees the original's orientation (issue 24)
        self.epoch = 0
        self.images = [np.load(folder.image(c), mmap_mode="r") for c in self.cases]
        self.labels = [np.load(folder.label(c), mmap_mode="r") for c in self.cases]
        self.index = [(i, s) for i, image in enumerate(self.images) for s in range(image.shape[0])]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        case, centre = self.index[i]
        idx = stack_indices(self.images[case].shape[0], centre, self.slices)
        image = torch.from_numpy(np.asarray(self.images[case][idx], dtype=np.float32))
        label = torch.from_numpy(np.asarray(self.labels[case][idx]).astype(np.int64))
        if self.stack_minmax:
            image = scale_stacks(image)
        if self.augment is not None:
            g = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, i))
            image, label = self.augment(image, label, g)
        if self.orientation == "original":  # RGB frames anti-transposed, as the augmentation's frame "auto"
            video = image.shape[1] == 3
            image, label = turn_original(image, video).contiguous(), turn_original(label, video).contiguous()
        if image.shape[1] == 1:  # grey: augmented once, then shown to SAM as RGB
            image = image.expand(-1, 3, -1, -1)
        return {"image": image, "label": label, "case": self.cases[case], "slice": centre}
