"""masam prepare: the raw layouts of BTCV, multi-site prostate and EndoVis'18 on small synthetic
folders, converted and read back through masam's dataset reader."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from masam.data import load_dataset
from masam.data.dataset import DatasetError, split_cases
from masam.data.io import read_label, read_volume
from masam.data.prepare import (
    ENDOVIS_COLOURS,
    colour_to_index,
    merge_labels,
    parse_label_map,
    prepare_btcv,
    prepare_endovis,
    prepare_prostate,
)
from tests.data.helpers import write_volume


def test_merge_labels_and_its_text_form():
    array = np.array([[0, 12, 13], [13, 5, 14]], np.uint8)
    assert merge_labels(array, {13: 12}).tolist() == [[0, 12, 12], [12, 5, 14]]
    assert merge_labels(array, {13: 12, 14: 0, 20: 1}).tolist() == [[0, 12, 12], [12, 5, 0]]
    assert merge_labels(array, {}).dtype == np.uint8 and merge_labels(array, {13: 12}).dtype == np.uint8
    assert parse_label_map("13:12, 14:0") == {13: 12, 14: 0}
    with pytest.raises(ValueError, match="expected FROM:TO"):
        parse_label_map("13-12")


def _btcv(root, ids=("0001", "0002", "0035", "0040")):
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


def test_btcv_merges_13_into_12_and_holds_out_the_originals_test_cases(tmp_path):
    dst = prepare_btcv(_btcv(tmp_path / "raw"), tmp_path / "BTCV")
    ds = load_dataset(dst)
    assert [c.name for c in ds.training] == ["btcv_0001", "btcv_0002"] and ds.modality == "CT"
    assert sorted(p.name for p in (dst / "imagesTs").iterdir()) == ["btcv_0035_0000.nii.gz", "btcv_0040_0000.nii.gz"]
    assert ds.num_classes == 12 and ds.labels["adrenal_gland"] == 12 and "left_adrenal_gland" not in ds.labels
    label = read_label(dst / "labelsTr" / "btcv_0002.nii.gz", read_volume(dst / "imagesTr" / "btcv_0002_0000.nii.gz"))
    assert set(np.unique(label.array)) == {0, 6, 12} and (label.array == 12).sum() == 9 + 12
    assert np.allclose(label.spacing, (0.7, 0.7, 2.5))
    assert read_label(dst / "labelsTs" / "btcv_0040.nii.gz").array.max() == 12
    split = json.loads((dst / "splits_original.json").read_text())
    assert split == {"train": ["btcv_0001", "btcv_0002"], "val": [], "test": ["btcv_0035", "btcv_0040"]}
    train, val = split_cases(ds.training, split_file=dst / "splits_original.json")
    assert [c.name for c in train] == ["btcv_0001", "btcv_0002"] and val == []
    unmerged = prepare_btcv(tmp_path / "raw", tmp_path / "BTCV13", merge={})
    assert load_dataset(unmerged).num_classes == 13
    assert read_label(unmerged / "labelsTr" / "btcv_0001.nii.gz").array.max() == 13


def test_btcv_missing_label_is_one_clear_error(tmp_path):
    raw = _btcv(tmp_path / "raw", ids=("0001",))
    (raw / "label" / "label0001.nii.gz").unlink()
    with pytest.raises(DatasetError, match="label0001.nii.gz: missing label"):
        prepare_btcv(raw, tmp_path / "out")


def test_prostate_sites_binary_labels_and_per_site_test_cases(tmp_path):
    raw = tmp_path / "raw"
    for site, cases, seg in (("UCL", ("01", "26", "32"), "segmentation"), ("BMC", ("00", "03"), "Segmentation")):
        (raw / site).mkdir(parents=True)
        for case in cases:
            label = np.zeros((3, 8, 8), np.uint8)
            label[1, 2:6, 2:6] = 2  # a zonal label: the original binarises it
            label[2, 3:4, 3:4] = 1
            write_volume(
                raw / site / f"Case{case}.nii.gz", np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
            )
            write_volume(raw / site / f"Case{case}_{seg}.nii.gz", label)
    dst = prepare_prostate(raw, tmp_path / "Prostate")
    ds = load_dataset(dst)
    assert ds.modality == "MRI" and ds.num_classes == 1
    split = json.loads((dst / "splits_original.json").read_text())
    # UCL is site D (test 0001, 0032, 0034), BMC site B (test 0003, ...)
    assert split["test"] == ["prostateB_0003", "prostateD_0001", "prostateD_0032"]
    assert split["train"] == ["prostateB_0000", "prostateD_0026"] == [c.name for c in ds.training]
    assert np.unique(read_label(dst / "labelsTr" / "prostateD_0026.nii.gz").array).tolist() == [0, 1]
    with pytest.raises(DatasetError, match="unknown prostate site"):
        (raw / "Elsewhere").mkdir()
        write_volume(raw / "Elsewhere" / "Case00.nii.gz", np.zeros((2, 4, 4), np.float32))
        prepare_prostate(raw, tmp_path / "P2")


def test_endovis_colour_labels_become_the_published_indices(tmp_path):
    colours = list(ENDOVIS_COLOURS)
    raw = tmp_path / "raw"
    for part, seqs in (("Train", (1, 2)), ("Test", (1,))):
        for s in seqs:
            frames, labels = raw / part / f"seq_{s}" / "left_frames", raw / part / f"seq_{s}" / "labels"
            frames.mkdir(parents=True)
            labels.mkdir(parents=True)
            for t in range(3):
                rgb = np.zeros((6, 8, 3), np.uint8)
                for k in range(12):  # every class once: pixel k of the flattened frame
                    rgb.reshape(-1, 3)[k + t] = colours[k]
                Image.fromarray(rgb).save(labels / f"frame{t:03d}.png")
                Image.fromarray(np.full((6, 8, 3), 40 * t, np.uint8)).save(frames / f"frame{t:03d}.png")
    dst = prepare_endovis(raw, tmp_path / "EndoVis")
    ds = load_dataset(dst)
    assert [c.name for c in ds.training] == ["endovis_0001", "endovis_0002"] and ds.modality == "RGB"
    assert ds.num_classes == 11 and ds.labels["instrument-shaft"] == 1 and ds.labels["ultrasound-probe"] == 11
    assert (dst / "imagesTs" / "endovis_0021").is_dir()
    label = read_label(dst / "labelsTr" / "endovis_0002", read_volume(dst / "imagesTr" / "endovis_0002"))
    assert label.array.shape == (3, 6, 8)
    for t in range(3):
        assert label.array[t].reshape(-1)[t : t + 12].tolist() == list(range(12))
    assert json.loads((dst / "splits_original.json").read_text())["test"] == ["endovis_0021"]
    assert colour_to_index(np.array([[[1, 2, 3]]], np.uint8)).tolist() == [[0]]  # unknown colour: background


def test_endovis_without_sequences_is_one_clear_error(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(DatasetError, match="no Train/seq_N or Test/seq_N"):
        prepare_endovis(tmp_path / "raw", tmp_path / "out")
