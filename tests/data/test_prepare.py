"""masam prepare: the raw layouts of BTCV, multi-site prostate and EndoVis'18 on small synthetic
folders, converted and read back through masam's dataset reader."""

from __future__ import annotations

import json

import numpy as np
import pytest

from masam.cli import main
from masam.data import load_dataset
from masam.data.dataset import DatasetError, split_cases
from masam.data.io import read_label, read_volume
from masam.data.labels import merge_labels
from masam.data.prepare import (
    ENDOVIS_COLOURS,
    colour_to_index,
    prepare_btcv,
    prepare_endovis,
    prepare_prostate,
)
from tests.data.helpers import make_btcv_raw, make_endovis_raw, make_prostate_raw, write_volume


def _btcv(root, ids=("0001", "0002", "0035", "0040")):
    return make_btcv_raw(root, ids)


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
    raw = make_prostate_raw(tmp_path / "raw")
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
    raw = make_endovis_raw(tmp_path / "raw", colours)
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


def test_masam_prepare_converts_the_three_raw_layouts_through_the_cli(tmp_path, capsys):
    btcv = tmp_path / "BTCV"
    assert main(["prepare", "btcv", str(make_btcv_raw(tmp_path / "btcv_raw")), str(btcv)]) == 0
    assert load_dataset(btcv).num_classes == 12
    assert read_label(btcv / "labelsTr" / "btcv_0001.nii.gz").array.max() == 12
    btcv13 = tmp_path / "BTCV13"
    assert main(["prepare", "btcv", str(tmp_path / "btcv_raw"), str(btcv13), "--merge-labels", "6:0"]) == 0
    ds13 = load_dataset(btcv13)
    assert ds13.num_classes == 13 and "liver" not in ds13.labels
    assert set(np.unique(read_label(btcv13 / "labelsTr" / "btcv_0001.nii.gz").array)) == {0, 12, 13}
    prostate = tmp_path / "Prostate"
    raw = make_prostate_raw(tmp_path / "p_raw")
    (raw / "UCL").rename(raw / "SiteD_renamed")
    assert main(["prepare", "prostate", str(raw), str(prostate), "--site", "SiteD_renamed=D", "BMC=B"]) == 0
    assert json.loads((prostate / "splits_original.json").read_text())["train"] == ["prostateB_0000", "prostateD_0026"]
    endovis = tmp_path / "EndoVis"
    e_raw = make_endovis_raw(tmp_path / "e_raw", list(ENDOVIS_COLOURS))
    assert main(["prepare", "endovis", str(e_raw), str(endovis)]) == 0
    assert load_dataset(endovis).num_classes == 11
    capsys.readouterr()
    assert main(["prepare", "btcv", str(tmp_path / "btcv_raw"), str(tmp_path / "x"), "--merge-labels", "13-12"]) == 1
    assert "expected FROM:TO" in capsys.readouterr().err
    assert main(["prepare", "endovis", str(tmp_path / "nothing"), str(tmp_path / "y")]) == 1


def test_merge_labels_in_the_cache_and_in_evaluate(tmp_path):
    """--merge-labels on a 13-class BTCV: label 13 becomes 12 in the cache, 12 classes remain."""
    dataset = prepare_btcv(make_btcv_raw(tmp_path / "raw"), tmp_path / "BTCV13", merge={})
    cache = tmp_path / "cache"
    argv = ["preprocess", "-d", str(dataset), "-o", str(cache), "--image-size", "16", "--merge-labels", "13:12"]
    assert main(argv) == 0
    plan = json.loads((cache / "plan.json").read_text())
    assert max(plan["labels"].values()) == 12 and plan["label_map"] == {"13": 12}
    cached = np.load(cache / "btcv_0001_label.npy")
    assert cached.max() == 12 and (cached == 12).sum() > 0 and not (cached == 13).any()
    # evaluate: a prediction with 12 where the reference has 13 scores Dice 1 once merged
    pred = tmp_path / "pred"
    pred.mkdir()
    ref = read_label(dataset / "labelsTr" / "btcv_0001.nii.gz")
    write_volume(pred / "btcv_0001.nii.gz", merge_labels(ref.array, {13: 12}), tuple(ref.spacing))
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "btcv_0001.nii.gz").write_bytes((dataset / "labelsTr" / "btcv_0001.nii.gz").read_bytes())
    out = tmp_path / "m.json"
    argv = ["evaluate", "-p", str(pred), "-r", str(refs), "-o", str(out)]
    argv += ["--dataset-json", str(dataset / "dataset.json")]
    assert main([*argv, "--merge-labels", "13:12"]) == 0
    means = json.loads(out.read_text())["mean_per_class"]
    assert len(means) == 12 and means["right_adrenal_gland"]["dice"] == 1.0
    assert main(argv) == 0  # unmerged: class 12 disagrees
    assert json.loads(out.read_text())["mean_per_class"]["right_adrenal_gland"]["dice"] < 1.0


def _pancreas_raw(root, names, layout="msd"):
    """Tiny volumes under the names of the original's folds, in MSD's layout or the split's own."""
    for i, name in enumerate(names):
        image = np.full((2, 4, 4), i, dtype=np.int16)
        label = np.zeros((2, 4, 4), dtype=np.uint8)
        label[0, 1:3, 1:3] = 1
        label[1, 2, 2] = 2
        for folder in ("imagesTr", "labelsTr") if layout == "msd" else (f"Training/{name}",):
            (root / folder).mkdir(parents=True, exist_ok=True)
        if layout == "msd":
            write_volume(root / "imagesTr" / f"{name}.nii.gz", image)
            write_volume(root / "labelsTr" / f"{name}.nii.gz", label)
        else:
            write_volume(root / "Training" / name / "image.nii.gz", image)
            write_volume(root / "Training" / name / "segmentation.nii.gz", label)
    return root


def test_pancreas_writes_the_originals_five_folds_and_fold_f_trains_on_them(tmp_path):
    """Issue 24: the folds of ``split_pancreas.pkl`` (its SHA-256 over the JSON of its lists, taken
    from the pickle at development time) in ``splits_final.json``; ``--fold 2`` trains on fold 2's
    196 train cases and holds out its 28 val cases; the test cases stay out of both."""
    import hashlib

    from masam.data.prepare import pancreas_folds
    from masam.train import TrainConfig, Trainer

    folds = pancreas_folds()
    digest = hashlib.sha256(json.dumps(folds).encode()).hexdigest()
    assert digest == "852dd22268a62dc1acc7cc1b2604d0428b5f898edc8d74cdef49b3717c9f975e"
    assert [tuple(map(len, f.values())) for f in folds] == [(196, 28, 57)] * 4 + [(200, 28, 53)]
    names = sorted({n for f in folds for part in f.values() for n in part})
    assert len(names) == 281 and sorted(n for f in folds for n in f["test"]) == names  # 5-fold on test
    src = _pancreas_raw(tmp_path / "raw", names, layout="split")
    dst = tmp_path / "Dataset_Pancreas"
    assert main(["prepare", "pancreas", str(src), str(dst)]) == 0
    assert len(list((dst / "imagesTr").glob("*_0000.nii.gz"))) == 281
    assert json.loads((dst / "dataset.json").read_text())["labels"] == {"background": 0, "pancreas": 1, "cancer": 2}
    assert json.loads((dst / "splits_original.json").read_text()) == folds
    assert read_label(dst / "labelsTr" / "pancreas_254.nii.gz").array.max() == 2
    trainer = Trainer(TrainConfig(dataset=str(dst), output=str(tmp_path / "run"), fold="2"), progress=False)
    trainer.dataset = load_dataset(str(dst))
    train, val = trainer._fold_split()
    assert [c.name for c in train] == folds[2]["train"] and [c.name for c in val] == folds[2]["val"]
    assert train[0].name == "pancreas_254" and val[0].name == "pancreas_299"  # read from the pickle
    assert not {c.name for c in train + val} & set(folds[2]["test"])


def test_pancreas_names_the_missing_cases(tmp_path, capsys):
    from masam.data.prepare import pancreas_folds

    names = sorted({n for f in pancreas_folds() for part in f.values() for n in part})
    src = _pancreas_raw(tmp_path / "raw", names[2:])
    assert main(["prepare", "pancreas", str(src), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "2 of the original's 281 pancreas cases are missing" in err and names[0] in err and names[1] in err
    assert not (tmp_path / "out").exists()
