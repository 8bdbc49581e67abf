"""nnU-Net layout, video folders, splits, normalisation and the preprocessing cache."""

from __future__ import annotations

import json

import numpy as np
import pytest

import masam.data.preprocess as preprocess_module
from masam.data import Normalization, StackDataset, preprocess_dataset
from masam.data.dataset import DatasetError, load_dataset, split_cases
from tests.data.helpers import make_dataset, make_video_dataset


def test_nnunet_layout_is_read(tmp_path):
    ds = load_dataset(make_dataset(tmp_path / "D", cases=3))
    assert [c.name for c in ds.training] == ["case00", "case01", "case02"]
    assert ds.modality == "CT" and ds.num_classes == 2 and ds.file_ending == ".nii.gz"
    assert ds.training[0].label.name == "case00.nii.gz"
    assert load_dataset(tmp_path / "D", modality="T2").modality == "MRI"


def test_bad_dataset_folders_are_refused(tmp_path):
    root = make_dataset(tmp_path / "D", cases=2)
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="dataset.json: not valid JSON"):
        load_dataset(root)
    (root / "dataset.json").write_text(json.dumps({**meta, "channel_names": {"0": "PET-ish"}}))
    with pytest.raises(DatasetError, match="unknown modality"):
        load_dataset(root)
    (root / "dataset.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "labels"}))
    with pytest.raises(DatasetError, match="missing key 'labels'"):
        load_dataset(root)
    (root / "dataset.json").unlink()
    with pytest.raises(DatasetError, match="dataset.json: missing"):
        load_dataset(root)
    empty = tmp_path / "E"
    (empty / "imagesTr").mkdir(parents=True)
    (empty / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError, match="no training images"):
        load_dataset(empty)
    (root / "dataset.json").write_text(json.dumps(meta))
    (root / "labelsTr" / "case01.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case01.nii.gz: missing label"):
        load_dataset(root)


def test_seeded_split_and_split_file(tmp_path):
    ds = load_dataset(make_dataset(tmp_path / "D", cases=5, shape=(4, 8, 8)))
    train, val = split_cases(ds.training, val_fraction=0.4, seed=1)
    assert len(val) == 2 and not {c.name for c in train} & {c.name for c in val}
    assert [c.name for c in split_cases(ds.training, 0.4, seed=1)[1]] == [c.name for c in val]
    split = tmp_path / "split.json"
    split.write_text(json.dumps([{"train": ["case00", "case01"], "val": ["case04"]}]))
    train, val = split_cases(ds.training, split_file=split)
    assert [c.name for c in val] == ["case04"] and len(train) == 2


def test_normalisation_by_modality():
    ct = Normalization("CT", window=(-200, 250))
    assert np.allclose(ct(np.array([-1000, -200, 25, 250, 3000])), [0, 0, 0.5, 1, 1])
    mri = Normalization("MRI", percentile=99)
    values = np.arange(1000, dtype=np.float32)
    out = mri(values)
    assert out.min() == 0 and np.isclose(out[int(np.percentile(values, 99))], 1.0, atol=1e-3) and out.max() == 1
    assert np.allclose(Normalization("RGB")(np.array([0, 51, 255], np.uint8)), [0, 0.2, 1])


def test_one_intensity_maps_to_one_input_value_in_every_stack(tmp_path):
    """No per-stack min-max: the same HU gives the same normalised value wherever it lies."""
    ds = load_dataset(make_dataset(tmp_path / "D", cases=1, shape=(10, 32, 32)))
    cache = preprocess_dataset(ds, tmp_path / "cache", image_size=32, normalization=Normalization("CT"))
    image = np.load(cache / "case00_image.npy").astype(np.float32)
    from tests.data.helpers import phantom

    raw, _ = phantom((10, 32, 32), seed=0)
    for hu in (raw[0, 0, 0], raw[5, 16, 16]):
        where = raw == hu
        assert np.ptp(image[:, 0][where]) < 1e-3  # float16 storage


def test_preprocessing_reads_each_case_once_and_reuses_the_cache(tmp_path, monkeypatch):
    ds = load_dataset(make_dataset(tmp_path / "D", cases=2))
    cache = preprocess_dataset(ds, tmp_path / "cache", image_size=64, normalization=Normalization("CT"))
    info = json.loads((cache / "case00.json").read_text())
    assert info["slice_axis"] == 0 and info["spacing"] == [1.0, 1.0, 3.0] and info["shape"] == [12, 40, 48]
    assert np.load(cache / "case00_image.npy").shape == (12, 1, 64, 64)
    assert np.load(cache / "case00_label.npy").shape == (12, 64, 64)

    def no_reading(*args, **kwargs):
        raise AssertionError("a volume was read again")

    monkeypatch.setattr(preprocess_module, "read_channels", no_reading)
    preprocess_dataset(ds, cache, image_size=64, normalization=Normalization("CT"))
    stacks = StackDataset(cache, slices=5)
    assert len(stacks) == 24 and stacks[3]["image"].shape == (5, 3, 64, 64)


def test_video_sequences_are_stacks_of_rgb_frames(tmp_path):
    ds = load_dataset(make_video_dataset(tmp_path / "V", sequences=2, frames=6))
    assert ds.modality == "RGB" and [c.name for c in ds.training] == ["seq0", "seq1"]
    cache = preprocess_dataset(ds, tmp_path / "cache", image_size=32, normalization=Normalization("RGB"))
    stacks = StackDataset(cache, slices=5)
    item = stacks[2]  # seq0, frame 2: frames 0..4
    assert item["image"].shape == (5, 3, 32, 32) and item["label"].shape == (5, 32, 32)
    image = item["image"]
    assert not np.allclose(image[:, 0], image[:, 1])  # RGB channels kept, not grey repeated
    # green channel encodes the frame number (30 + t)
    assert np.allclose(image[:, 1, 0, 0].numpy() * 255, [30, 31, 32, 33, 34], atol=0.6)
    assert set(np.unique(item["label"].numpy())) == {0, 1, 2}
