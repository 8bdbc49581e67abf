"""Lesion tasks for the prompt benchmark (issue 14), in the nnU-Net raw layout.

- ``synthetic``: the demo's abdomen phantom with a small, low-contrast lesion inside the liver.
  Labels: 1 organ (the liver around the lesion), 2 lesion. The organ is labelled so that a box
  around class 2 differs from a box around all foreground (``--box-label 2`` is tested), and so
  that "refine the boxed target, keep the automatic result elsewhere" has something to keep.
- ``brats``: the four ../shared BraTS 2013 cases (Flair), cropped to the brain. Labels: 1 brain
  outside the tumour, 2 tumour (all four tumour classes).
- ``deeplesion``: the one ../shared DeepLesion stack (CT windowed to 0..255 by MedSAM2; train with
  ``--ct-window 0 255``). Label 1 lesion. One case only: train and test on it measures fitting,
  not generalisation.

Run by hand: ``python benchmarks/lesion_data.py OUT [--train 16 --test 6]`` writes the synthetic task.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from masam.demo import SPACING, phantom_case

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
LESION_LABELS = {"background": 0, "organ": 1, "lesion": 2}
# HU by which the lesion is darker than the liver around it (CT liver metastases: 20-60 HU). At 25,
# a contrast-to-noise of ~1 per voxel, vit_tiny trained from scratch at 64 px saw no lesion at all:
# given a box on a lesion-free liver slice it drew the same lesion as on a lesion slice.
LESION_CONTRAST = 50.0


def add_lesion(
    image: np.ndarray, organ: np.ndarray, rng: np.random.Generator, radius_mm=(4.0, 7.0), contrast=LESION_CONTRAST
) -> np.ndarray:
    """Darken an ellipsoid inside ``organ`` (``[z, y, x]``, spacing :data:`SPACING`) by
    ``contrast`` HU, in place; returns the lesion mask. Radii are drawn in mm within ``radius_mm``
    (in-plane) and the lesion lies at least 1.5 mm inside the organ's surface. The phantom's noise
    (18 HU) and the liver's texture (12 HU) make the lesion hard to see: contrast-to-noise ~2 at
    the default :data:`LESION_CONTRAST`."""
    spacing = np.array(SPACING[::-1])  # z, y, x
    radii = np.array([rng.uniform(*radius_mm) * 1.2, rng.uniform(*radius_mm), rng.uniform(*radius_mm)])
    depth = ndimage.distance_transform_edt(organ, sampling=spacing)
    candidates = np.argwhere(depth >= radii.max() + 1.5)
    if len(candidates) == 0:
        raise ValueError("the organ is too small for the lesion")
    centre = candidates[rng.integers(len(candidates))]
    grid = np.meshgrid(*[np.arange(n) for n in organ.shape], indexing="ij")
    distance = sum(((g - c) * s / r) ** 2 for g, c, s, r in zip(grid, centre, spacing, radii))
    lesion = (distance <= 1) & organ
    image[lesion] -= contrast
    return lesion


def lesion_case(seed: int, shape=(24, 64, 64), contrast: float = LESION_CONTRAST) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic case: CT values (int16) and labels (uint8, 1 organ, 2 lesion), ``[z, y, x]``."""
    image, organs = phantom_case(seed, shape)
    image = image.astype(np.float32)
    liver = organs == 1
    lesion = add_lesion(image, liver, np.random.default_rng(seed + 7919), contrast=contrast)
    label = np.where(lesion, 2, np.where(liver, 1, 0)).astype(np.uint8)
    return np.round(image).astype(np.int16), label


def _write(array: np.ndarray, path: Path, spacing, origin=(0.0, 0.0, 0.0), direction=None) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        image.SetDirection(tuple(float(d) for d in direction))
    sitk.WriteImage(image, str(path), useCompression=True)


def _layout(root: Path, labels: dict, channel: str, num_training: int) -> None:
    meta = {"channel_names": {"0": channel}, "labels": labels, "file_ending": ".nii.gz", "numTraining": num_training}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))


def write_lesion_dataset(root: Path, train_cases: int = 16, test_cases: int = 6, seed: int = 0, **kw) -> Path:
    """The synthetic task: imagesTr/labelsTr and imagesTs/labelsTs."""
    root = Path(root)
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(train_cases + test_cases):
        image, label = lesion_case(seed * 1000 + i, **kw)
        split = "Tr" if i < train_cases else "Ts"
        _write(image, root / f"images{split}" / f"lesion_{i:03d}_0000.nii.gz", SPACING, (-40.0, -30.0, 100.0))
        _write(label, root / f"labels{split}" / f"lesion_{i:03d}.nii.gz", SPACING, (-40.0, -30.0, 100.0))
    _layout(root, LESION_LABELS, "CT", train_cases)
    return root


def write_brats_dataset(root: Path, test_case: str = "brats_2013_pat0006_1", folder: Path | None = None) -> Path:
    """The BraTS cases cropped to their brain mask: the test case in imagesTs, the others in imagesTr."""
    folder = Path(folder or SHARED_DATA / "deepmedic_brats2015")
    root = Path(root)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cases = sorted(p for p in folder.iterdir() if p.is_dir())
    for case in cases:
        flair = sitk.ReadImage(str(case / "Flair_subtrMeanDivStd.nii.gz"), sitk.sitkFloat32)
        tumour = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "OTMultiClass.nii.gz"))) > 0
        brain = sitk.GetArrayFromImage(sitk.ReadImage(str(case / "brainmask.nii.gz"))) > 0
        label = np.where(tumour, 2, np.where(brain, 1, 0)).astype(np.uint8)
        low = np.argwhere(brain | tumour).min(0)
        high = np.argwhere(brain | tumour).max(0) + 1
        labels = sitk.GetImageFromArray(label)
        labels.CopyInformation(flair)
        # SimpleITK slicing keeps the physical position: the crop's origin moves with it
        crop = tuple(slice(int(a), int(b)) for a, b in zip(low[::-1], high[::-1]))
        split = "Ts" if case.name == test_case else "Tr"
        sitk.WriteImage(flair[crop], str(root / f"images{split}" / f"{case.name}_0000.nii.gz"), useCompression=True)
        sitk.WriteImage(labels[crop], str(root / f"labels{split}" / f"{case.name}.nii.gz"), useCompression=True)
    _layout(root, {"background": 0, "brain": 1, "tumour": 2}, "FLAIR", len(cases) - 1)
    return root


BRATS_CASES = ("brats_2013_pat0001_1", "brats_2013_pat0002_1", "brats_2013_pat0005_1", "brats_2013_pat0006_1")
BRATS_CHANNELS = {"Flair": "FLAIR", "T1c": "T1c"}


def write_brats_tumour_dataset(
    root: Path, test_case: str, channels: tuple[str, ...] = ("Flair",), folder: Path | None = None
) -> Path:
    """The learning task of issue 27: whole BraTS volumes (not cropped), the given sequences as
    channels, label 1 = whole tumour (``OTMultiClass > 0``); ``test_case`` in imagesTs, the others
    in imagesTr. Files already written are kept."""
    folder = Path(folder or SHARED_DATA / "deepmedic_brats2015")
    root = Path(root)
    if test_case not in BRATS_CASES:
        raise ValueError(f"{test_case!r} is not one of the BraTS cases {BRATS_CASES}")
    if (root / "dataset.json").is_file():
        return root
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for case in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        split = "Ts" if case == test_case else "Tr"
        for index, sequence in enumerate(channels):
            image = sitk.ReadImage(str(folder / case / f"{sequence}_subtrMeanDivStd.nii.gz"), sitk.sitkFloat32)
            sitk.WriteImage(image, str(root / f"images{split}" / f"{case}_{index:04d}.nii.gz"), useCompression=True)
        reference = sitk.ReadImage(str(folder / case / "OTMultiClass.nii.gz"))
        tumour = sitk.GetImageFromArray((sitk.GetArrayFromImage(reference) > 0).astype(np.uint8))
        tumour.CopyInformation(reference)
        sitk.WriteImage(tumour, str(root / f"labels{split}" / f"{case}.nii.gz"), useCompression=True)
    meta = {
        "channel_names": {str(i): BRATS_CHANNELS[s] for i, s in enumerate(channels)},
        "labels": {"background": 0, "tumour": 1}, "file_ending": ".nii.gz", "numTraining": len(BRATS_CASES) - 1,
    }  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


def write_deeplesion_dataset(root: Path, npz: Path | None = None) -> Path:
    """The DeepLesion stack as one training case and the same case as the test case."""
    npz = Path(npz or SHARED_DATA / "medsam2_deeplesion" / "CT_Lesion_000015_01_01_103-115.npz")
    data = np.load(npz)
    root = Path(root)
    name = "deeplesion_000015"
    for split in ("Tr", "Ts"):
        (root / f"images{split}").mkdir(parents=True, exist_ok=True)
        (root / f"labels{split}").mkdir(parents=True, exist_ok=True)
        geometry = (data["spacing"], data["origin"], data["direction"])
        _write(data["imgs"].astype(np.int16), root / f"images{split}" / f"{name}_0000.nii.gz", *geometry)
        _write((data["gts"] > 0).astype(np.uint8), root / f"labels{split}" / f"{name}.nii.gz", *geometry)
    _layout(root, {"background": 0, "lesion": 1}, "CT", 1)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--test", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_lesion_dataset(Path(args.output), args.train, args.test, args.seed))


if __name__ == "__main__":
    main()
