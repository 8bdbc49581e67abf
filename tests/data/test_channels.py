"""nnU-Net channel files (``CASE_0000``, ``CASE_0001``): which files a model's channels need, and
what the error says when they do not fit (issue 28: never ``['one']``).

Multi-channel datasets end to end (issue 15): several channels per case (FLAIR + T1c from the
shared BraTS cases) train and predict, each channel normalised by its own rule, in dataset.json's
channel order."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from masam.cli import main
from masam.data import load_dataset
from masam.data.channels import channel_files, describe_channels
from masam.errors import DatasetError, InputError
from masam.infer import Predictor
from masam.model.checkpoint import load_model
from tests.conftest import SHARED, require_shared
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


BRATS = SHARED / "data" / "deepmedic_brats2015"
CASES = ("0001", "0002", "0005", "0006")
TINY = ["--arch", "vit_tiny", "--image-size", "32", "--rank", "4", "--warmup", "1", "--workers", "0", "--quiet"]


def _crop(path: Path, centre: np.ndarray) -> np.ndarray:
    """6 axial slices around ``centre`` of a BraTS volume, every 4th voxel in-plane: [6, 32, 32]."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    z, y, x = (int(c) for c in centre)
    y, x = np.clip([y - 64, x - 64], 0, [array.shape[1] - 128, array.shape[2] - 128])
    return array[z - 3 : z + 3, y : y + 128 : 4, x : x + 128 : 4]


def make_brats_dataset(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """imagesTr/bratsN_0000 (FLAIR), _0001 (T1c), labelsTr/bratsN (tumour: any BraTS class); returns
    the arrays written per case."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    written = {}
    for case in CASES:
        folder = require_shared(BRATS / f"brats_2013_pat{case}_1")
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "OTMultiClass.nii.gz")))
        centre = np.mean(np.nonzero(label > 0), axis=1)
        flair, t1c = (_crop(folder / f"{n}_subtrMeanDivStd.nii.gz", centre) for n in ("Flair", "T1c"))
        tumour = (_crop(folder / "OTMultiClass.nii.gz", centre) > 0).astype(np.uint8)
        spacing = (1.0, 1.0, 4.0)
        write_volume(root / "imagesTr" / f"brats{case}_0000.nii.gz", flair.astype(np.float32), spacing)
        write_volume(root / "imagesTr" / f"brats{case}_0001.nii.gz", t1c.astype(np.float32), spacing)
        write_volume(root / "labelsTr" / f"brats{case}.nii.gz", tumour, spacing)
        written[f"brats{case}"] = (flair, t1c)
    meta = {"channel_names": {"0": "FLAIR", "1": "T1c"}, "labels": {"background": 0, "tumour": 1},
            "file_ending": ".nii.gz", "numTraining": len(CASES)}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return written


def mri_reference(array: np.ndarray) -> np.ndarray:
    """The default MRI rule written out (issue 27, robust): the foreground's (voxels above the
    minimum) median -2 to +4 interquartile ranges, to [0, 1]."""
    q25, median, q75 = np.quantile(array[array > array.min()].astype(np.float64), [0.25, 0.5, 0.75])
    low, high = median - 2 * (q75 - q25), median + 4 * (q75 - q25)
    return np.clip((array.astype(np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    root = tmp_path_factory.mktemp("brats") / "D"
    arrays = make_brats_dataset(root)
    run = root.parent / "run"
    args = ["train", "-d", str(root), "-o", str(run), *TINY, "--iterations", "3", "--batch-size", "2"]
    assert main([*args, "--val-every", "1", "--slices", "3"]) == 0
    return root, run, arrays


def test_training_cache_holds_normalised_flair_then_t1c_then_their_mean(brats):
    root, run, arrays = brats
    flair, t1c = arrays["brats0001"]
    cached = np.load(run / "cache" / "brats0001_image.npy").astype(np.float32)  # [S, 3, 32, 32]
    assert cached.shape == (6, 3, 32, 32)
    ref0, ref1 = mri_reference(flair), mri_reference(t1c)
    assert np.allclose(cached[:, 0], ref0, atol=2e-3) and np.allclose(cached[:, 1], ref1, atol=2e-3)
    assert np.allclose(cached[:, 2], (ref0 + ref1) / 2, atol=2e-3)
    assert not np.allclose(ref0, ref1, atol=0.05)  # the two channels differ: the order is tested


def test_model_records_its_channels_and_prediction_feeds_them_in_order(brats):
    root, run, arrays = brats
    spec = load_model(weights=run / "model_last.safetensors").input_spec
    assert spec.channels == ("FLAIR", "T1c")
    assert [n["modality"] for n in spec.normalization] == ["MRI", "MRI"]
    predictor = Predictor.from_files(run / "model_last.safetensors", batch_size=1)
    seen = []
    predictor.model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    images = root / "imagesTr"
    result = predictor.predict([images / "brats0002_0000.nii.gz", images / "brats0002_0001.nii.gz"])
    assert result.labels.shape == (6, 32, 32)
    first = seen[0][0]  # [D, 3, 32, 32]: stack of slice 0, slices 0, 0, 1
    flair, t1c = arrays["brats0002"]
    assert torch.allclose(first[1, 0], torch.from_numpy(mri_reference(flair)[0]), atol=1e-5)
    assert torch.allclose(first[1, 1], torch.from_numpy(mri_reference(t1c)[0]), atol=1e-5)
    assert torch.allclose(first[2, 2], (first[2, 0] + first[2, 1]) / 2, atol=1e-6)


def test_predict_command_needs_the_model_channels(brats, tmp_path, capsys):
    root, run, _ = brats
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("brats0005_0000.nii.gz", "brats0005_0001.nii.gz", "brats0006_0000.nii.gz"):
        shutil.copy(root / "imagesTr" / name, inputs / name)
    code = main(["predict", "-m", str(run), "-i", str(inputs), "-o", str(tmp_path / "out"), "--quiet"])
    assert code == 1  # brats0006 lacks its T1c file
    assert [p.name for p in (tmp_path / "out").glob("[!.]*")] == ["brats0005.nii.gz"]
    err = capsys.readouterr().err
    assert "brats0006" in err and "brats0006_0001.nii.gz" in err and "FLAIR" in err


def test_a_channel_with_other_geometry_is_refused(brats, tmp_path, capsys):
    root, run, _ = brats
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(root / "imagesTr" / "brats0005_0000.nii.gz", inputs / "x_0000.nii.gz")
    write_volume(inputs / "x_0001.nii.gz", np.zeros((6, 32, 30), np.float32), (1.0, 1.0, 4.0))
    assert main(["predict", "-m", str(run), "-i", str(inputs), "-o", str(tmp_path / "out"), "--quiet"]) == 1
    assert "x_0001.nii.gz: channel 1 differs from channel 0" in capsys.readouterr().err


def test_four_channels_are_refused_with_a_suggestion(tmp_path):
    root = tmp_path / "D"
    (root / "imagesTr").mkdir(parents=True)
    names = {"0": "FLAIR", "1": "T1", "2": "T1c", "3": "T2"}
    (root / "dataset.json").write_text(
        json.dumps({"channel_names": names, "labels": {"background": 0, "t": 1}, "file_ending": ".nii.gz"})
    )
    with pytest.raises(DatasetError, match="4 channels.*choose 3"):
        load_dataset(root)


def test_the_predictor_finds_the_other_channel_files_as_the_cli_does(brats, tmp_path):
    root, run, _ = brats
    predictor = Predictor.from_files(run / "model_last.safetensors", batch_size=2)
    images = root / "imagesTr"
    by_list = predictor.predict([images / "brats0002_0000.nii.gz", images / "brats0002_0001.nii.gz"]).labels
    by_first = predictor.predict(images / "brats0002_0000.nii.gz")  # issue 28: brats0002_0001 found beside it
    assert np.array_equal(by_first.labels, by_list) and len(by_first.volume.channels) == 1
    alone = tmp_path / "brats0002_0000.nii.gz"
    shutil.copy(images / alone.name, alone)
    with pytest.raises(Exception, match=r"the model takes 2 channels \(FLAIR, T1c\); missing \['brats0002_0001"):
        predictor.predict(alone)
