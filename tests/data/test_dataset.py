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
        assert np.ptp(image[:, 0][where]) == 0


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


def test_stack_minmax_gives_the_original_loaders_values_in_training_and_prediction(tmp_path):
    """Issue 24, finding 3: with ``stack_minmax`` (the paper presets) every stack reaches the model
    as the original's loader makes it from the same volume: CT clip, x255, z-score, then min-max over
    the stack (datasets/dataset.py:370-378, here its arithmetic in ``masam.data.convention``), within
    float32 rounding, in training (StackDataset) and in prediction (the Predictor's stacks)."""
    import torch

    from masam.data.convention import minmax_stack, window_ct
    from masam.infer.predictor import Predictor
    from masam.model import ModelConfig, build_model
    from tests.data.helpers import write_volume

    root = make_dataset(tmp_path / "D", cases=1, shape=(6, 32, 32))
    raw = np.random.default_rng(0).integers(-50, 120, (6, 32, 32)).astype(np.int16)  # soft tissue only
    write_volume(root / "imagesTr" / "case00_0000.nii.gz", raw, (1.0, 1.0, 3.0))
    norm = Normalization("CT", stack_minmax=True)
    cache = preprocess_dataset(load_dataset(root), tmp_path / "cache", image_size=32, normalization=norm)
    plain = StackDataset(cache, slices=5)[0]["image"][:, 0].numpy()
    item = StackDataset(cache, slices=5, stack_minmax=True)[0]
    original = minmax_stack(window_ct(raw[[0, 0, 0, 1, 2]].astype(np.float64)))
    assert np.abs(item["image"][:, 0].numpy() - original).max() < 1e-6
    assert np.abs(plain - original).max() > 0.3  # without it: the window's scale, not the stack's
    seen = []
    model = build_model(ModelConfig("vit_tiny", 32, num_classes=2, rank=4)).eval()
    predictor = Predictor(model, norm, batch_size=2)
    predictor.forward_stacks = lambda stacks, boxes: seen.append(stacks) or torch.zeros(
        stacks.shape[0], stacks.shape[1], 3, 32, 32
    )
    slices = torch.from_numpy(norm(raw))[:, None]
    list(predictor.slice_probabilities(slices))
    assert np.abs(seen[0][0, :, 0].numpy() - original).max() < 1e-6
    assert Normalization(**norm.to_dict()).stack_minmax  # the model's input spec keeps it


def test_orientation_original_gives_the_network_the_original_loaders_stacks(tmp_path):
    """Issue 24, finding 2: under ``orientation="original"`` (the paper presets) a training stack is
    what the original's loader gives the network: its orientation, its augmentation in it, not
    turned back (the literal pipeline of tests/data/reference_augment.py)."""
    import torch

    from masam.data.augment import AugmentConfig, StackAugmenter
    from masam.data.loader import sample_seed
    from tests.data import reference_augment as ref

    root = make_dataset(tmp_path / "D", cases=1, shape=(6, 32, 32))
    cache = preprocess_dataset(load_dataset(root), tmp_path / "cache", image_size=32, normalization=Normalization("CT"))
    plain = StackDataset(cache, slices=5)
    turned = StackDataset(cache, slices=5, orientation="original")
    augmented = StackDataset(
        cache, slices=5, augment=StackAugmenter(AugmentConfig(policy="original")), seed=7, orientation="original"
    )
    for i in (0, 3):
        image, label = plain[i]["image"][:, :1].numpy(), plain[i]["label"].numpy()
        original_image, original_label = ref.original_layout(image, label)  # [H, W, D], the original's
        assert np.array_equal(turned[i]["image"][:, 0].numpy(), np.moveaxis(original_image, -1, 0))
        g = torch.Generator().manual_seed(sample_seed(7, 0, i))
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=g)))
        ref_image, ref_label = ref.pipeline(original_image, original_label, rng)
        item = augmented[i]
        assert np.array_equal(item["image"][:, 0].numpy(), np.moveaxis(ref_image, -1, 0))
        assert np.array_equal(item["label"].numpy(), np.moveaxis(ref_label, -1, 0).astype(np.int64))


def _original_loader_stacks(volume_zyx: np.ndarray, modality: str) -> list[np.ndarray]:
    """The original's stacks of a volume, literally: nibabel's ``[x, y, z]`` array, the preprocessing
    (util_script_btcv.py:36-52; util_script_prostateMRI.py:68-75 for MR), then the loader's
    intensity steps (datasets/dataset.py:19-21, 370-378). ``[H, W, 5]`` float32 per slice."""
    HU_min, HU_max = -200, 250
    data_mean = 50.21997497685108
    data_std = 68.47153712416372
    img_arr = np.transpose(volume_zyx, (2, 1, 0)).astype(np.float64)  # get_fdata()
    if modality == "MRI":
        img_arr = np.float32(img_arr)
        high = np.quantile(img_arr, 0.99)
        low = np.min(img_arr)
        img_arr = np.where(img_arr > high, high, img_arr)
        lungwin = np.array([low * 1.0, high * 1.0])
        img_arr = (img_arr - lungwin[0]) / (lungwin[1] - lungwin[0])
    first, last = img_arr[:, :, 0:1], img_arr[:, :, -1:]
    img_arr = np.concatenate((first, first, img_arr, last, last), axis=-1)
    stacks = []
    for slice_indx in range(2, img_arr.shape[2] - 2):
        data = np.flip(np.rot90(img_arr[:, :, slice_indx - 2 : slice_indx + 3], k=1, axes=(0, 1)), axis=1)
        data = np.clip(data, HU_min, HU_max)
        data = (data - HU_min) / (HU_max - HU_min) * 255.0
        data = np.float32(data)
        data = (data - data_mean) / data_std
        data = (data - data.min()) / (data.max() - data.min() + 0.00000001)
        stacks.append(np.float32(data))
    return stacks


@pytest.mark.parametrize("modality", ["CT", "MRI"])
def test_augmented_stacks_from_the_cache_are_the_original_loaders_bit_for_bit(tmp_path, modality):
    """Issue 24, finding 1: with the presets' settings (float32 cache, ``stack_minmax``,
    ``orientation="original"``, the original policy) a training stack is, bit for bit, what the
    original's preprocessing, loader and augmentation make of the same volume with the same draws
    (at the model's size: the original resizes with scipy, masam with torch)."""
    import torch

    from masam.data.augment import AugmentConfig, StackAugmenter
    from masam.data.loader import sample_seed
    from tests.data import reference_augment as ref
    from tests.data.helpers import write_volume

    rng = np.random.default_rng(1)
    raw = (rng.integers(-400, 600, (6, 32, 32)) if modality == "CT" else rng.integers(0, 900, (6, 32, 32)))
    raw = raw.astype(np.int16)
    root = make_dataset(tmp_path / "D", cases=1, shape=(6, 32, 32), modality=modality)
    write_volume(root / "imagesTr" / "case00_0000.nii.gz", raw, (1.0, 1.0, 3.0))
    norm = Normalization(modality, stack_minmax=True)
    cache = preprocess_dataset(load_dataset(root), tmp_path / "cache", image_size=32, normalization=norm)
    augment = StackAugmenter(AugmentConfig(policy="original"))
    ours = StackDataset(cache, slices=5, augment=augment, seed=7, stack_minmax=True, orientation="original")
    label = np.asarray(ours.labels[0])  # the cache's labels, [z, y, x]
    originals = _original_loader_stacks(raw, modality)
    for i in range(6):
        g = torch.Generator().manual_seed(sample_seed(7, 0, i))
        draws = np.random.default_rng(int(torch.randint(0, 2**62, (), generator=g)))
        lab = np.moveaxis(label[np.clip(np.arange(i - 2, i + 3), 0, 5)][:, ::-1, ::-1], 0, -1).astype(np.float32)
        ref_image, ref_label = ref.pipeline(np.ascontiguousarray(originals[i]), np.ascontiguousarray(lab), draws)
        item = ours[i]
        assert np.array_equal(item["image"][:, 0].numpy(), np.moveaxis(ref_image, -1, 0)), i
        assert np.array_equal(item["label"].numpy(), np.moveaxis(ref_label, -1, 0).astype(np.int64)), i
