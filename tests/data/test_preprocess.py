"""Preprocessing in a pool of processes: the cache is the same, file for file, as with one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from masam.data import ImageReadError, Normalization, load_dataset
from masam.data.preprocess import preprocess_dataset
from tests.data.helpers import make_dataset, write_volume


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_two_processes_write_the_same_cache_as_one(tmp_path):
    ds = load_dataset(make_dataset(tmp_path / "D", cases=3, shape=(7, 40, 48)))
    norm = Normalization("CT")
    one = _files(preprocess_dataset(ds, tmp_path / "one", image_size=48, normalization=norm))
    two = _files(preprocess_dataset(ds, tmp_path / "two", image_size=48, normalization=norm, processes=2))
    assert sorted(one) == sorted(two) == sorted(
        ["plan.json"] + [f"case{i:02d}{s}" for i in range(3) for s in ("_image.npy", "_label.npy", ".json")]
    )
    assert all(one[name] == two[name] for name in one), [name for name in one if one[name] != two[name]]
    assert np.load(tmp_path / "two" / "case02_image.npy").shape == (7, 1, 48, 48)


@pytest.mark.parametrize("bad_case", [0, 1])  # the first case goes to the worker, the second is done here
def test_a_bad_case_is_reported_by_name_and_no_plan_is_written(tmp_path, bad_case):
    root = make_dataset(tmp_path / "D", cases=3, shape=(5, 20, 24))
    bad = np.zeros((5, 20, 24), np.uint8)
    bad[2, 3, 4] = 7  # a label value dataset.json does not declare
    write_volume(root / "labelsTr" / f"case{bad_case:02d}.nii.gz", bad, (1.0, 1.0, 3.0))
    ds = load_dataset(root)
    with pytest.raises(ImageReadError, match=rf"case{bad_case:02d}.nii.gz: label values \[7\] are not declared"):
        preprocess_dataset(ds, tmp_path / "c", image_size=32, normalization=Normalization("CT"), processes=2)
    assert not (tmp_path / "c" / "plan.json").exists()
    assert not any(name.startswith(".") or "tmp" in name for name in os.listdir(tmp_path / "c"))



def test_the_cache_keeps_every_normalised_value_bit_for_bit(tmp_path):
    """Issue 24, finding 1: the cache stores what the normalisation computed (float32), so every HU
    level of the window reaches the augmentation's 8-bit ops unchanged (a float16 cache moved 13
    of the 451 levels to another 8-bit value, benchmarks/results/fidelity_cache.json)."""
    root = make_dataset(tmp_path / "D", cases=1, shape=(2, 32, 32))
    raw = np.arange(-1000, 1048, dtype=np.int16).reshape(2, 32, 32)  # every HU level of the window
    write_volume(root / "imagesTr" / "case00_0000.nii.gz", raw, (1.0, 1.0, 3.0))
    cache = preprocess_dataset(load_dataset(root), tmp_path / "cache", image_size=32, normalization=Normalization("CT"))
    image = np.load(cache / "case00_image.npy")
    assert image.dtype == np.float32
    expected = Normalization("CT")(raw)
    assert np.array_equal(image[:, 0], expected)
    eight_bit = (image[:, 0] * np.float32(255)).astype(np.uint8)
    assert len(np.unique(eight_bit)) == 256 and np.array_equal(eight_bit, (expected * np.float32(255)).astype(np.uint8))
