"""``masam export --format monai-bundle``: a folder that MONAI's own ``verify_metadata`` accepts and
whose ``inference.json`` MONAI's bundle runner executes on a NIfTI file through masam's predictor,
with the run folder's label map as the result."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from monai.bundle import run, verify_metadata

from masam.cli import main
from tests.share.helpers import make_runs

SCHEMA = Path(os.environ.get("MASAM_MONAI_SCHEMA") or Path(__file__).with_name("monai_metadata_schema.json"))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    runs, dataset = make_runs(root / "work")
    out = root / "organs"
    assert main(["export", str(runs), "--format", "monai-bundle", "-o", str(out), "--name", "organs"]) == 0
    return out, runs, dataset


def _verify(meta, tmp_path):
    schema = tmp_path / "schema.json"  # verify_metadata downloads to filepath unless the file is there
    shutil.copy(SCHEMA, schema)
    verify_metadata(meta_file=str(meta), filepath=str(schema))


def test_layout_and_metadata_pass_monais_check(bundle, tmp_path):
    out, _, _ = bundle
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert {"configs/metadata.json", "configs/inference.json", "docs/README.md", "docs/license.txt",
            "models/manifest.json", "models/folds/fold_0/model_best.safetensors"} <= files  # fmt: skip
    assert not any(f.endswith((".pt", ".pth", ".ts")) for f in files)
    _verify(out / "configs" / "metadata.json", tmp_path)
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "organ_a",
                                                                             "2": "organ_b"}  # fmt: skip
    assert meta["network_data_format"]["inputs"]["image"]["format"] == "hounsfield"
    assert meta["eval_metrics"] == {"cross_validation_dice_organ_a": 1.0, "cross_validation_dice_organ_b": 1.0}


def test_monais_check_refuses_incomplete_metadata(bundle, tmp_path):
    """The schema check bites: metadata without its authors is refused by verify_metadata."""
    out, _, _ = bundle
    meta = json.loads((out / "configs" / "metadata.json").read_text())
    del meta["authors"]
    bad = tmp_path / "metadata.json"
    bad.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="authors"):
        _verify(bad, tmp_path)


def test_monais_bundle_runner_predicts_as_masam(bundle, tmp_path):
    out, runs, dataset = bundle
    image = dataset / "imagesTs" / "test00_0000.nii.gz"
    assert main(["predict", "-m", str(runs), "-i", str(image), "-o", str(tmp_path / "masam"), "--quiet"]) == 0
    run(run_id="run", config_file=str(out / "configs" / "inference.json"), meta_file=str(out / "configs" /
        "metadata.json"), logging_file=False, bundle_root=str(out), input=str(image),
        output_dir=str(tmp_path / "monai"))  # fmt: skip
    ours, theirs = tmp_path / "masam" / "test00.nii.gz", tmp_path / "monai" / "test00.nii.gz"
    assert theirs.is_file() and theirs.read_bytes() == ours.read_bytes()


def test_models_folder_is_also_a_masam_model(bundle, tmp_path):
    out, runs, dataset = bundle
    images = dataset / "imagesTs"
    main(["predict", "-m", str(runs), "-i", str(images), "-o", str(tmp_path / "a"), "--quiet"])
    main(["predict", "-m", str(out / "models"), "-i", str(images), "-o", str(tmp_path / "b"), "--quiet"])
    assert (tmp_path / "a" / "test00.nii.gz").read_bytes() == (tmp_path / "b" / "test00.nii.gz").read_bytes()


def test_existing_output_is_refused(bundle, capsys):
    out, runs, _ = bundle
    assert main(["export", str(runs), "--format", "monai-bundle", "-o", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err
