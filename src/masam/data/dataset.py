"""Datasets in the nnU-Net v2 raw layout.

    DATASET/dataset.json          {"channel_names": {"0": "CT"}, "labels": {"background": 0, ...},
                                   "file_ending": ".nii.gz", "numTraining": N}
    DATASET/imagesTr/CASE_0000.nii.gz     DATASET/labelsTr/CASE.nii.gz
    DATASET/imagesTs/CASE_0000.nii.gz

Video sequences use the same layout with one folder per case instead of one file:
``imagesTr/SEQ/*.png`` (RGB frames) and ``labelsTr/SEQ/*.png`` (class indices), and
``"channel_names": {"0": "RGB"}``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError, ImageReadError
from .dicom import is_dicom_folder
from .io import FRAME_SUFFIXES, VOLUME_SUFFIXES, has_suffix, list_frames
from .normalize import MAX_CHANNELS, modality_from_name


@dataclass
class Case:
    name: str
    image: Path
    label: Path | None = None
    channels: tuple[Path, ...] = ()  # the files of channels 1, 2 (issue 15); channel 0 is ``image``

    @property
    def images(self) -> list[Path]:
        """Every channel's image, in channel order."""
        return [self.image, *self.channels]


@dataclass
class Dataset:
    root: Path
    labels: dict[str, int]
    modality: str
    file_ending: str
    training: list[Case] = field(default_factory=list)
    test: list[Case] = field(default_factory=list)
    channel_names: tuple[str, ...] = ()  # dataset.json's, in channel order
    channel_modalities: tuple[str, ...] = ()  # CT, MRI or RGB per channel (issue 15)

    @property
    def num_classes(self) -> int:
        """Foreground classes: the largest label value."""
        return max(self.labels.values())


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (every dataset needs a dataset.json, as in nnU-Net)")
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise DatasetError(f"{path}: expected a JSON object")
    return value


def _cases(folder: Path, file_ending: str, with_channel: bool) -> list[tuple[str, Path]]:
    if not folder.is_dir():
        return []
    found = []
    suffix = f"_0000{file_ending}" if with_channel else file_ending
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and has_suffix(entry.name, VOLUME_SUFFIXES):
            raise DatasetError(f"{entry}: is a folder, named like an image file")
        if entry.is_dir() and (list_frames(entry) or (with_channel and is_dicom_folder(entry))):
            found.append((entry.name, entry))  # a frame folder, or a DICOM series folder (one case)
        elif entry.is_file() and entry.name.endswith(suffix):
            found.append((entry.name[: -len(suffix)], entry))
    return found


def _channels(channels, modality: str | None, meta_path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """dataset.json's channel names in channel order and their modalities (``modality`` replaces
    channel 0's, for one channel only). 1 to 3 channels."""
    if not isinstance(channels, dict) or not channels:
        raise DatasetError(f"{meta_path}: channel_names must map channel numbers to names, got {channels!r}")
    try:
        ordered = sorted(channels.items(), key=lambda kv: int(kv[0]))
    except ValueError:
        raise DatasetError(f"{meta_path}: channel_names keys must be channel numbers, got {channels!r}") from None
    names = tuple(str(v) for _, v in ordered)
    if len(names) > MAX_CHANNELS:
        raise DatasetError(
            f"{meta_path}: {len(names)} channels {list(names)}; SAM takes 3 input channels: choose 3 (or fewer) "
            "of them in channel_names and renumber their files"
        )
    if modality is not None and len(names) > 1:
        raise DatasetError(f"{meta_path}: --modality applies to one-channel datasets; this one has {list(names)}")
    try:
        modalities = tuple(modality_from_name(modality if modality is not None else n) for n in names)
    except ValueError as err:
        raise DatasetError(f"{meta_path}: {err}") from None
    if len(names) > 1 and "RGB" in modalities:
        raise DatasetError(f"{meta_path}: RGB cannot be combined with other channels: {list(names)}")
    return names, modalities


def _extra_channels(image: Path, name: str, ending: str, count: int) -> tuple[Path, ...]:
    """The files of channels 1.. of a case; a missing one is an error naming it."""
    if count == 1:
        return ()
    if image.is_dir():
        raise DatasetError(f"{image}: a folder case has one channel; the dataset declares {count}")
    files = tuple(image.parent / f"{name}_{i:04d}{ending}" for i in range(1, count))
    for path in files:
        if not path.is_file():
            raise DatasetError(f"{path}: missing channel file of case {name}")
    return files


def load_dataset(root: str | os.PathLike, modality: str | None = None) -> Dataset:
    """Read and check ``dataset.json`` and list the cases; ``modality`` overrides the channel name."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such dataset folder")
    meta_path = root / "dataset.json"
    meta = _read_json(meta_path)
    for key in ("channel_names", "labels", "file_ending"):
        if key not in meta:
            raise DatasetError(f"{meta_path}: missing key {key!r}")
    names, modalities = _channels(meta["channel_names"], modality, meta_path)
    mod = modalities[0]
    labels = meta["labels"]
    if not isinstance(labels, dict) or not all(isinstance(v, int) and v >= 0 for v in labels.values()):
        raise DatasetError(
            f"{meta_path}: labels must map names to non-negative integers (region labels are not supported)"
        )
    if 0 not in labels.values() or len(labels) < 2:
        raise DatasetError(f"{meta_path}: labels need a background (0) and at least one class")
    ending = str(meta["file_ending"])
    if not has_suffix(ending, VOLUME_SUFFIXES + FRAME_SUFFIXES):
        raise DatasetError(f"{meta_path}: unsupported file_ending {ending!r}")

    dataset = Dataset(root, {str(k): int(v) for k, v in labels.items()}, mod, ending)
    dataset.channel_names, dataset.channel_modalities = names, modalities
    for name, image in _cases(root / "imagesTr", ending, with_channel=True):
        label = root / "labelsTr" / (name if image.is_dir() and list_frames(image) else name + ending)
        if not label.exists():
            raise DatasetError(f"{label}: missing label for training case {name}")
        dataset.training.append(Case(name, image, label, _extra_channels(image, name, ending, len(names))))
    dataset.test = [
        Case(n, p, None, _extra_channels(p, n, ending, len(names)))
        for n, p in _cases(root / "imagesTs", ending, with_channel=True)
    ]
    if not dataset.training:
        raise DatasetError(
            f"{root / 'imagesTr'}: no training images (expected CASE_0000{ending} files or frame folders)"
        )
    return dataset


def split_cases(
    cases: list[Case], val_fraction: float = 0.2, seed: int = 0, split_file: str | os.PathLike | None = None
) -> tuple[list[Case], list[Case]]:
    """Training and validation cases: from ``split_file`` (``{"train": [...], "val": [...]}`` or
    nnU-Net's ``splits_final.json``, fold 0) or a seeded random split."""
    by_name = {c.name: c for c in cases}
    if split_file is not None:
        path = Path(split_file)
        try:
            split = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DatasetError(f"{path}: cannot read split file: {err}") from None
        if isinstance(split, list):
            split = split[0]
        try:
            unknown = [n for n in split["train"] + split["val"] if n not in by_name]
        except (KeyError, TypeError):
            raise DatasetError(f"{path}: expected {{'train': [...], 'val': [...]}}") from None
        if unknown:
            raise DatasetError(f"{path}: unknown cases {unknown[:5]}")
        return [by_name[n] for n in split["train"]], [by_name[n] for n in split["val"]]
    names = sorted(by_name)
    random.Random(seed).shuffle(names)
    n_val = min(len(names) - 1, max(1, round(val_fraction * len(names)))) if val_fraction > 0 and len(names) > 1 else 0
    val = set(names[:n_val])
    return [by_name[n] for n in sorted(by_name) if n not in val], [by_name[n] for n in sorted(val)]


def check_label_values(label_values, declared: dict[str, int], path: Path) -> None:
    undeclared = sorted(set(int(v) for v in label_values) - set(declared.values()))
    if undeclared:
        raise ImageReadError(f"{path}: label values {undeclared} are not declared in dataset.json")
