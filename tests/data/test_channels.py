"""nnU-Net channel files (``CASE_0000``, ``CASE_0001``): which files a model's channels need, and
what the error says when they do not fit (issue 28: never ``['one']``)."""

from __future__ import annotations

import numpy as np
import pytest

from masam.data.channels import channel_files, describe_channels
from masam.errors import InputError
from tests.data.helpers import write_volume


def test_channels_are_described_in_words():
    assert describe_channels(()) == "1 channel"
    assert describe_channels(("CT",)) == "1 channel (CT)"
    assert describe_channels(("FLAIR", "T1c")) == "2 channels (FLAIR, T1c)"


@pytest.mark.parametrize(("channels", "said"), [((), "1 channel"), (("CT",), "1 channel (CT)")])
def test_a_one_channel_model_given_two_channel_files_names_them(tmp_path, channels, said):
    for i in range(2):
        write_volume(tmp_path / f"ct_{i:04d}.nii.gz", np.zeros((3, 4, 4), np.int16), (1.0, 1.0, 1.0))
    with pytest.raises(InputError) as err:
        channel_files(tmp_path / "ct_0000.nii.gz", channels)
    assert str(err.value) == (
        f"{tmp_path / 'ct'}: the model takes {said}; has channel files the model does not take: ['ct_0001.nii.gz']"
    )
    assert "['one']" not in str(err.value)
