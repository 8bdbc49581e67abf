"""Files masam writes get the umask's mode, like any other tool's output (issue 18, problem 3)."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import SimpleITK as sitk

from masam.data.io import read_volume, write_label
from masam.fileio import atomic_path


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_respects_umask(tmp_path, umask_022):
    target = tmp_path / "config.json"
    with atomic_path(target) as tmp:
        tmp.write_text("{}")
    assert _mode(target) == 0o644


def test_atomic_write_respects_a_stricter_umask(tmp_path):
    old = os.umask(0o077)
    try:
        with atomic_path(tmp_path / "x.txt") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "x.txt") == 0o600


def test_written_label_map_is_readable_by_others(tmp_path, umask_022):
    image = sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16))
    sitk.WriteImage(image, str(tmp_path / "img.nii.gz"))
    ref = read_volume(tmp_path / "img.nii.gz")
    out = write_label(tmp_path / "pred.nii.gz", np.ones((3, 4, 5), np.uint8), ref)
    assert _mode(out) == 0o644
