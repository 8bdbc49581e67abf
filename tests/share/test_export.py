"""``masam export``: what the archive holds and says (manifest, members, settings without the
machine's paths, cross-validation, SAM included or referenced), folds chosen, errors in one line."""

from __future__ import annotations

import hashlib
import json
import zipfile

import pytest
import torch

from masam.cli import main
from masam.model.masam_format import read_header
from masam.model.sam_format import base_fingerprint, read_torch_file
from masam.share.archive import verify_archive
from masam.share.export import shared_settings
from tests.conftest import official_sam_state
from tests.share.helpers import make_runs, make_sam


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("export"))


def test_archive_holds_every_fold_and_a_manifest_of_it(runs, tmp_path):
    folder, dataset = runs
    assert main(["export", str(folder), "-o", str(tmp_path / "m.zip"), "--name", "organs"]) == 0
    manifest = verify_archive(tmp_path / "m.zip")
    with zipfile.ZipFile(tmp_path / "m.zip") as zf:
        names = set(zf.namelist())
        for name, entry in manifest["members"].items():
            assert hashlib.sha256(zf.read(name)).hexdigest() == entry["sha256"]
        config = json.loads(zf.read("folds/fold_1/config.json"))
        assert json.loads(zf.read("dataset.json")) == json.loads((dataset / "dataset.json").read_text())
        assert json.loads(zf.read("folds/fold_0/postprocessing.json"))["keep_largest_component"] == {"1": True,
                                                                                                     "2": False}
    for fold in ("fold_0", "fold_1"):
        assert {f"folds/{fold}/{n}" for n in ("model_best.safetensors", "config.json", "progress.png", "log.jsonl",
                                                "postprocessing.json")} <= names  # fmt: skip
    assert {"manifest.json", "README.md", "crossval.json", "dataset.json"} <= names
    assert "sam_base.safetensors" not in names and not any("training_state" in n or "cache" in n for n in names)
    assert manifest["name"] == "organs" and manifest["masam_version"]
    model = manifest["model"]
    assert (model["arch"], model["fact_rank"], model["slices"], model["num_classes"]) == ("vit_tiny", 4, 5, 2)
    assert manifest["input"]["normalization"][0]["window"] == [-200.0, 250.0]
    assert manifest["training_spacing"] == {"cases": 1, "min": [1.0, 1.0, 3.0], "median": [1.0, 1.0, 3.0],
                                            "max": [1.0, 1.0, 3.0]}  # fmt: skip
    assert [f["name"] for f in manifest["folds"]] == ["fold_0", "fold_1"]
    assert manifest["sam"] == {"mode": "none"} and manifest["postprocessing"] == {"1": True, "2": False}
    # the recipe without the machine's paths
    assert config["train"]["dataset"] == "dataset" and "output" not in config["train"]
    assert "device" not in config["train"] and config["train"]["lr"] == 1e-3


def test_cross_validation_comes_from_the_validation_predictions(runs, tmp_path):
    folder, _ = runs
    main(["export", str(folder), "-o", str(tmp_path / "m.zip")])
    cv = verify_archive(tmp_path / "m.zip")["cross_validation"]
    # each fold's validation/ holds its case's own reference labels: Dice 1 for both classes
    assert cv["folds"]["fold_0"] == {"source": "validation predictions", "cases": 1,
                                     "dice": {"organ_a": 1.0, "organ_b": 1.0}}  # fmt: skip
    assert cv["mean"] == {"organ_a": 1.0, "organ_b": 1.0}


def test_cross_validation_falls_back_on_the_training_log(tmp_path):
    folder, dataset = make_runs(tmp_path)
    (dataset / "dataset.json").unlink()  # the dataset is gone: no reference labels
    main(["export", str(folder), "-o", str(tmp_path / "m.zip")])
    manifest = verify_archive(tmp_path / "m.zip")
    cv = manifest["cross_validation"]
    assert cv["mean"] == {"organ_a": 0.75, "organ_b": 0.25}
    assert cv["folds"]["fold_1"]["source"] == "last validation in training (step 12)"
    assert manifest["dataset"] is None and "dataset.json" not in manifest["members"]


def test_chosen_folds_only(runs, tmp_path):
    folder, _ = runs
    main(["export", str(folder), "-o", str(tmp_path / "m.zip"), "--folds", "1"])
    manifest = verify_archive(tmp_path / "m.zip")
    assert [f["name"] for f in manifest["folds"]] == ["fold_1"]
    assert not any(n.startswith("folds/fold_0/") for n in manifest["members"])
    assert main(["export", str(folder), "-o", str(tmp_path / "n.zip"), "--folds", "7"]) == 1
    assert not (tmp_path / "n.zip").exists()


def test_card_only_prints_and_writes_nothing(runs, tmp_path, capsys):
    folder, _ = runs
    before = sorted(p.name for p in folder.rglob("*"))
    assert main(["export", str(folder), "--card-only", "--name", "organs"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("---\n") and "# organs" in out and "| organ_a | 1.000 | 1.000 | 1.000 |" in out
    assert sorted(p.name for p in folder.rglob("*")) == before and list(tmp_path.iterdir()) == []


def test_missing_output_and_bad_run_are_one_line_errors(runs, tmp_path, capsys):
    folder, _ = runs
    assert main(["export", str(folder)]) == 1
    assert capsys.readouterr().err.strip() == ("masam export: error: -o is needed: the archive to write (or "
                                               "--card-only to print the model card)")  # fmt: skip
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "m.zip")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{tmp_path}: not a training run folder" in err


def test_sam_included_or_referenced(tmp_path, capsys):
    sam = make_sam(tmp_path)
    folder, _ = make_runs(tmp_path / "sam", sam)
    fingerprint = read_header(folder / "fold_0" / "model_best.safetensors")["base_fingerprint"]
    assert fingerprint == base_fingerprint(read_torch_file(sam))
    main(["export", str(folder), "-o", str(tmp_path / "ref.zip")])
    ref = verify_archive(tmp_path / "ref.zip")
    assert ref["sam"] == {"mode": "reference", "arch": "vit_tiny", "fingerprint": fingerprint, "file": sam.name}
    assert "sam_base.safetensors" not in ref["members"]
    main(["export", str(folder), "-o", str(tmp_path / "inc.zip"), "--sam-weights", "include"])
    inc = verify_archive(tmp_path / "inc.zip")
    assert inc["sam"]["mode"] == "included" and "sam_base.safetensors" in inc["members"]
    other = tmp_path / "other.pth"
    other.write_bytes(sam.read_bytes())


    torch.save(official_sam_state("vit_tiny", 64, seed=4), other)
    capsys.readouterr()
    code = main(["export", str(folder), "-o", str(tmp_path / "bad.zip"), "--sam-weights", "include",
                 "--sam-checkpoint", str(other)])  # fmt: skip
    assert code == 1 and "not the SAM checkpoint the model was fine-tuned from" in capsys.readouterr().err
    assert not (tmp_path / "bad.zip").exists() and not list(tmp_path.glob(".tmp-*"))


def test_a_name_that_is_no_folder_name_is_refused_before_writing(runs, tmp_path, capsys):
    folder, _ = runs
    assert main(["export", str(folder), "-o", str(tmp_path / "m.zip"), "--name", "my model/v2"]) == 1
    assert "model name 'my model/v2' is not usable as a folder name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_the_shared_settings_leave_the_machine_out_and_name_files_only():
    config = {
        "train": {"dataset": "/data/me/Dataset001", "sam_checkpoint": "/ckpt/sam_vit_b.pth", "output": "/runs/x",
                  "workers": 4, "device": "cuda", "lr": 8e-4, "rank": 32},
        "model": {"arch": "vit_b"},
    }  # fmt: skip
    assert shared_settings(config) == {
        "train": {"dataset": "Dataset001", "sam_checkpoint": "sam_vit_b.pth", "lr": 8e-4, "rank": 32},
        "model": {"arch": "vit_b"},
    }
