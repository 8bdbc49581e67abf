"""``masam prepare``: the paper's public datasets, from their raw layouts to masam's (nnU-Net-style)
layout, with the original MA-SAM's train/test splits.

Output: ``dataset.json``; training cases in ``imagesTr``/``labelsTr``; the original's test cases
in ``imagesTs`` with their labels in ``labelsTs`` (for ``masam evaluate``); ``splits_original.json``
``{"train": [...], "val": [], "test": [...]}`` (readable by ``--split-file``: no validation cases,
as the original). Images are copied unchanged (the original reads the raw files); labels are
rewritten (merged / converted), keeping each image's geometry. Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from PIL import Image

from ..fileio import atomic_path
from ..run_folder import SPLITS
from .dataset import DatasetError
from .labels import merge_labels, merged_names
from .splits import write_splits

# preprocessing/util_script_btcv.py:77 and dataset_split.md:2
BTCV_TEST = ("0035", "0036", "0037", "0038", "0039", "0040")
BTCV_LABELS = {
    "background": 0, "spleen": 1, "right_kidney": 2, "left_kidney": 3, "gallbladder": 4, "esophagus": 5,
    "liver": 6, "stomach": 7, "aorta": 8, "inferior_vena_cava": 9, "portal_and_splenic_vein": 10,
    "pancreas": 11, "right_adrenal_gland": 12, "left_adrenal_gland": 13,
}  # fmt: skip
BTCV_MERGE = {13: 12}  # dataset.py:386-387, test.py:127-129 (12 classes; 12 = "adrenal gland")
# dataset_split.md:5-11 (test cases per site); site letters as in the multi-site prostate benchmark
# (Liu et al., SAML, MICCAI 2020): A RUNMC, B BMC, C HCRUDB (I2CVB), D UCL, E BIDMC, F HK.
PROSTATE_TEST = {
    "A": ("0003", "0008", "0012", "0015", "0018", "0026"),
    "B": ("0003", "0008", "0012", "0015", "0018", "0026"),
    "C": ("0003", "0008", "0013", "0015"),
    "D": ("0001", "0032", "0034"),
    "E": ("0000", "0004", "0009"),
    "F": ("0038", "0041", "0046"),
}
PROSTATE_SITES = {"RUNMC": "A", "BMC": "B", "I2CVB": "C", "HCRUDB": "C", "UCL": "D", "BIDMC": "E", "HK": "F"}
# EndoVis 2018 (robotic scene segmentation) labels.json colours, as util_script_endovis18.py:19-31
ENDOVIS_COLOURS = {
    (0, 0, 0): ("background-tissue", 0),
    (0, 255, 0): ("instrument-shaft", 1),
    (0, 255, 255): ("instrument-clasper", 2),
    (125, 255, 12): ("instrument-wrist", 3),
    (255, 55, 0): ("kidney-parenchyma", 4),
    (24, 55, 125): ("covered-kidney", 5),
    (187, 155, 25): ("thread", 6),
    (0, 255, 125): ("clamps", 7),
    (255, 255, 125): ("suturing-needle", 8),
    (123, 15, 175): ("suction-instrument", 9),
    (124, 155, 5): ("small-intestine", 10),
    (12, 255, 141): ("ultrasound-probe", 11),
}
ENDOVIS_TEST_OFFSET = 20  # Test/seq_N becomes case 00(N+20): util_script_endovis18.py:50-53, test 0021-0024
# MSD Task07 Pancreas (dataset.json of the Medical Segmentation Decathlon)
PANCREAS_LABELS = {"background": 0, "pancreas": 1, "cancer": 2}


def _write_label(array: np.ndarray, reference: sitk.Image, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _read(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError:
        raise DatasetError(f"{path}: cannot be read as an image") from None


def _finish(dst: Path, meta: dict, train: list[str], test: list[str]) -> Path:
    meta = {**meta, "numTraining": len(train)}
    with atomic_path(dst / "dataset.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    with atomic_path(dst / "splits_original.json") as tmp:
        tmp.write_text(json.dumps({"train": sorted(train), "val": [], "test": sorted(test)}, indent=1))
    return dst


def _volume_case(image: Path, label: Path, dst: Path, name: str, test: bool, relabel) -> None:
    """Copy one volume and write its relabelled label map into the training or test folders."""
    images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
    (dst / images).mkdir(parents=True, exist_ok=True)
    (dst / labels).mkdir(parents=True, exist_ok=True)
    reference = _read(image)
    mask = _read(label)
    if mask.GetSize() != reference.GetSize():
        raise DatasetError(f"{label}: size {mask.GetSize()} differs from its image's {reference.GetSize()}")
    array = relabel(sitk.GetArrayFromImage(mask))
    _write_label(array, reference, dst / labels / f"{name}.nii.gz")
    _copy(image, dst / images / f"{name}_0000.nii.gz")


def prepare_btcv(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    merge: dict[int, int] | None = None,
    test_cases: tuple[str, ...] = BTCV_TEST,
) -> Path:
    """BTCV (Synapse ``img/imgXXXX.nii.gz`` + ``label/labelXXXX.nii.gz``) -> ``dst``; cases
    ``btcv_XXXX``. ``merge`` default ``{13: 12}`` as the original (pass ``{}`` for 13 classes)."""
    src, dst = Path(src), Path(dst)
    merge = dict(BTCV_MERGE) if merge is None else dict(merge)
    img_dir = src / "img"
    found = sorted(img_dir.glob("img*.nii.gz")) if img_dir.is_dir() else []
    if not found:
        raise DatasetError(f"{img_dir}: no imgXXXX.nii.gz files (expected the Synapse layout img/ + label/)")
    train, test = [], []
    for image in found:
        case_id = image.name[3:7]  # util_script_btcv.py:29
        label = src / "label" / image.name.replace("img", "label", 1)
        if not label.is_file():
            raise DatasetError(f"{label}: missing label for {image.name}")
        name = f"btcv_{case_id}"
        (test if case_id in test_cases else train).append(name)
        _volume_case(image, label, dst, name, case_id in test_cases, lambda a: merge_labels(a, merge))
    names = {12: "adrenal_gland"} if merge == BTCV_MERGE else None
    meta = {"channel_names": {"0": "CT"}, "labels": merged_names(BTCV_LABELS, merge, names), "file_ending": ".nii.gz"}
    return _finish(dst, meta, train, test)


def _site_letter(folder: Path, sites: dict[str, str] | None) -> str:
    key = folder.name
    table = {**PROSTATE_SITES, **(sites or {})}
    for name, letter in table.items():
        if key.upper() == name.upper():
            return letter
    match = re.fullmatch(r"(?:site|prostate)?_?([A-F])", key, re.IGNORECASE)
    if match is None:
        raise DatasetError(
            f"{folder}: unknown prostate site (use {', '.join(PROSTATE_SITES)}, Site[A-F] or pass sites=)"
        )
    return match[1].upper()


def _prostate_cases(folder: Path) -> list[tuple[Path, Path]]:
    pairs = []
    for image in sorted(folder.glob("*.nii.gz")):
        if "segmentation" in image.name.lower():
            continue
        stem = image.name[: -len(".nii.gz")]
        labels = [p for p in folder.glob(f"{stem}_*.nii.gz") if p.name.lower() == f"{stem.lower()}_segmentation.nii.gz"]
        if not labels:
            raise DatasetError(f"{folder}: no {stem}_segmentation.nii.gz for {image.name}")
        pairs.append((image, labels[0]))
    return pairs


def prepare_prostate(src: str | os.PathLike, dst: str | os.PathLike, sites: dict[str, str] | None = None) -> Path:
    """Multi-site prostate MRI (``CaseXX.nii.gz`` + ``CaseXX_segmentation.nii.gz``, in one folder
    per site, or ``src`` itself one site) -> ``dst``; cases ``prostate{site}_00XX`` as the original's
    ``organize_data`` (util_script_prostateMRI.py:31-39); labels above 1 become 1 (line 35)."""
    src, dst = Path(src), Path(dst)
    folders = [p for p in sorted(src.iterdir()) if p.is_dir() and any(p.glob("*.nii.gz"))] if src.is_dir() else []
    if not folders and src.is_dir() and any(src.glob("*.nii.gz")):
        folders = [src]
    if not folders:
        raise DatasetError(f"{src}: no site folders with CaseXX.nii.gz files")
    train, test = [], []
    for folder in folders:
        letter = _site_letter(folder, sites)
        for image, label in _prostate_cases(folder):
            case_id = "00" + image.name[4:6]
            name = f"prostate{letter}_{case_id}"
            held_out = case_id in PROSTATE_TEST[letter]
            (test if held_out else train).append(name)
            _volume_case(image, label, dst, name, held_out, lambda a: np.minimum(a, 1).astype(a.dtype))
    meta = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "prostate": 1}, "file_ending": ".nii.gz"}
    return _finish(dst, meta, train, test)


def colour_to_index(rgb: np.ndarray, path: Path | str = "<array>") -> np.ndarray:
    """An EndoVis'18 colour label ``[H, W, 3]`` -> class indices ``[H, W]`` (uint8); colours not in
    the table become 0, as in the original (util_script_endovis18.py:66-70)."""
    if rgb.ndim != 3 or rgb.shape[-1] < 3:
        raise DatasetError(f"{path}: expected an RGB colour label, got shape {list(rgb.shape)}")
    out = np.zeros(rgb.shape[:2], np.uint8)
    for colour, (_, index) in ENDOVIS_COLOURS.items():
        out[np.all(rgb[..., :3] == colour, axis=-1)] = index
    return out


def _endovis_sequence(seq: Path, dst: Path, name: str, test: bool) -> None:
    images, labels = ("imagesTs", "labelsTs") if test else ("imagesTr", "labelsTr")
    frame_dir, label_dir = seq / "left_frames", seq / "labels"
    names = sorted(p.name for p in label_dir.glob("*.png")) if label_dir.is_dir() else []
    if not names:
        raise DatasetError(f"{label_dir}: no label PNGs")
    (dst / images / name).mkdir(parents=True, exist_ok=True)
    (dst / labels / name).mkdir(parents=True, exist_ok=True)
    for frame in names:  # frames listed from the labels, as the original (util_script_endovis18.py:55-75)
        if not (frame_dir / frame).is_file():
            raise DatasetError(f"{frame_dir / frame}: missing frame for label {frame}")
        with Image.open(label_dir / frame) as im:
            index = colour_to_index(np.asarray(im.convert("RGB")), label_dir / frame)
        with atomic_path(dst / labels / name / frame) as tmp:
            Image.fromarray(index).save(tmp)
        _copy(frame_dir / frame, dst / images / name / frame)


def prepare_endovis(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """EndoVis'18 (``Train/seq_N`` and ``Test/seq_N``, each ``left_frames/*.png`` + colour
    ``labels/*.png``) -> ``dst``: one folder per sequence, ``endovis_00NN`` (test sequences N+20)."""
    src, dst = Path(src), Path(dst)
    train, test = [], []
    for part, offset in (("Train", 0), ("Test", ENDOVIS_TEST_OFFSET)):
        folder = next((p for p in (src / part, src / part.lower()) if p.is_dir()), None)
        if folder is None:
            continue
        for seq in sorted(folder.glob("seq*")):
            name = f"endovis_00{int(seq.name.split('_')[-1]) + offset:02d}"
            (test if offset else train).append(name)
            _endovis_sequence(seq, dst, name, bool(offset))
    if not train and not test:
        raise DatasetError(f"{src}: no Train/seq_N or Test/seq_N folders")
    labels = {name: index for name, index in ENDOVIS_COLOURS.values()}
    return _finish(dst, {"channel_names": {"0": "RGB"}, "labels": labels, "file_ending": ".png"}, train, test)


def pancreas_folds() -> list[dict[str, list[str]]]:
    """The original's 5 MSD-Pancreas folds (``preprocessing/split_pancreas.pkl``: train 196, val
    28, test 57 or 53 cases; the test lists cover the 281 labelled cases once), shipped as JSON
    (read once from the pickle at development time; never unpickled here)."""
    return json.loads((Path(__file__).with_name("pancreas_folds.json")).read_text())["folds"]


def _pancreas_files(src: Path, name: str) -> tuple[Path, Path]:
    """A case's image and label: the layout the original's split names (``Training/NAME/image.nii.gz``,
    ``segmentation.nii.gz``), else MSD's (``imagesTr/NAME.nii.gz``, ``labelsTr/NAME.nii.gz``)."""
    folder = src / "Training" / name
    if (folder / "image.nii.gz").is_file():
        return folder / "image.nii.gz", folder / "segmentation.nii.gz"
    return src / "imagesTr" / f"{name}.nii.gz", src / "labelsTr" / f"{name}.nii.gz"


def prepare_pancreas(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """MSD-Pancreas -> ``dst``: the 281 labelled cases in ``imagesTr``/``labelsTr`` (labels as MSD's:
    pancreas 1, cancer 2), ``splits_final.json`` with the original's 5 folds (``--fold F`` trains on
    fold F's train cases and holds out its val cases) and ``splits_original.json`` with each fold's
    train, val and test lists. Every case of the folds must be there; the missing are listed."""
    src, dst = Path(src), Path(dst)
    folds = pancreas_folds()
    names = sorted({n for fold in folds for part in fold.values() for n in part})
    files = {n: _pancreas_files(src, n) for n in names}
    missing = [n for n, (image, label) in files.items() if not (image.is_file() and label.is_file())]
    if missing:
        raise DatasetError(
            f"{src}: {len(missing)} of the original's {len(names)} pancreas cases are missing (expected "
            f"Training/NAME/image.nii.gz + segmentation.nii.gz, or imagesTr/NAME.nii.gz + labelsTr/NAME.nii.gz): "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
        )
    for name, (image, label) in files.items():
        _volume_case(image, label, dst, name, False, lambda a: a)
    meta = {"channel_names": {"0": "CT"}, "labels": PANCREAS_LABELS, "file_ending": ".nii.gz"}
    meta["numTraining"] = len(names)
    with atomic_path(dst / "dataset.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    write_splits(dst / SPLITS, [{"train": f["train"], "val": f["val"]} for f in folds])
    with atomic_path(dst / "splits_original.json") as tmp:
        tmp.write_text(json.dumps(folds, indent=1))
    return dst
