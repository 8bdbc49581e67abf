"""Issue 26's acceptance: export a run, install it elsewhere (MASAM_MODELS), and ``masam predict -m
NAME`` or ``-m model.zip`` gives the run folder's label maps, file for file; self-contained archives
need neither the run nor SAM's checkpoint; bad archives are refused in one line, nothing installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from masam.cli import main
from masam.share.install import install_archive, models_folder
from tests.share.helpers import make_runs, make_sam


def predict(model, images, out, *extra):
    """The label maps written, file name -> bytes; each must hold more than background, so that two
    equal results mean something."""
    assert main(["predict", "-m", str(model), "-i", str(images), "-o", str(out), "--quiet", *map(str, extra)]) == 0
    written = sorted(p for p in out.iterdir() if p.name.endswith(".nii.gz"))
    for path in written:
        assert len(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path))))) > 1, path
    return {p.name: p.read_bytes() for p in written}


@pytest.fixture
def models(tmp_path, monkeypatch):
    folder = tmp_path / "installed"
    monkeypatch.setenv("MASAM_MODELS", str(folder))
    return folder


def test_installed_model_predicts_as_the_run_folder(tmp_path, models, capsys):
    runs, dataset = make_runs(tmp_path / "work")
    images = dataset / "imagesTs"
    expected = predict(runs, images, tmp_path / "from_run")  # both folds, post-processing applied
    assert expected and len(expected) == 1
    assert main(["export", str(runs), "-o", str(tmp_path / "organs.zip"), "--name", "organs"]) == 0
    assert main(["install", str(tmp_path / "organs.zip")]) == 0
    assert "installed organs into" in capsys.readouterr().out
    assert models_folder() == models and (models / "organs" / "manifest.json").is_file()
    assert predict("organs", images, tmp_path / "by_name") == expected
    assert predict(tmp_path / "organs.zip", images, tmp_path / "by_archive") == expected
    assert [p.name for p in models.iterdir()] == ["organs"]  # nothing else left in the models folder


def test_self_contained_archive_needs_no_run_and_no_sam_checkpoint(tmp_path, models, capsys):
    """Installed and predicted in a new process, with another home and working folder, after the
    run, its dataset and SAM's checkpoint are gone."""
    sam = make_sam(tmp_path)
    runs, dataset = make_runs(tmp_path / "work", sam)
    images = tmp_path / "images"
    shutil.copytree(dataset / "imagesTs", images)
    expected = predict(runs, images, tmp_path / "from_run", "--sam-checkpoint", sam)
    assert main(["export", str(runs), "-o", str(tmp_path / "m.zip"), "--name", "selfc", "--sam-weights",
                 "include"]) == 0  # fmt: skip
    shutil.rmtree(tmp_path / "work")  # the run, its dataset
    sam.unlink()  # and SAM's checkpoint are gone
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "HOME": str(elsewhere), "MASAM_MODELS": str(elsewhere / "models"),
           "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
    for command in (["install", str(tmp_path / "m.zip")],
                    ["predict", "-m", "selfc", "-i", str(images), "-o", str(tmp_path / "new_process"), "--quiet"]):
        done = subprocess.run([sys.executable, "-m", "masam", *command], cwd=elsewhere, env=env, capture_output=True,
                              text=True)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert (elsewhere / "models" / "selfc" / "sam_base.safetensors").is_file()
    written = {p.name: p.read_bytes() for p in (tmp_path / "new_process").iterdir() if p.name.endswith(".nii.gz")}
    assert written == expected


def test_referenced_sam_must_be_given(tmp_path, models, capsys):
    sam = make_sam(tmp_path)
    runs, dataset = make_runs(tmp_path / "work", sam)
    main(["export", str(runs), "-o", str(tmp_path / "m.zip"), "--name", "refd"])
    install_archive(tmp_path / "m.zip")
    capsys.readouterr()
    code = main(["predict", "-m", "refd", "-i", str(dataset / "imagesTs"), "-o", str(tmp_path / "p"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0
    assert "was fine-tuned from SAM vit_tiny (sam_vit_tiny.pth, base fingerprint" in err
    assert "give it with --sam-checkpoint" in err
    expected = predict(runs, dataset / "imagesTs", tmp_path / "a", "--sam-checkpoint", sam)
    assert predict("refd", dataset / "imagesTs", tmp_path / "b", "--sam-checkpoint", sam) == expected


def _tamper(source, target):
    """A changed weights file inside an otherwise intact archive."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith(".safetensors"):
                data = data[:-4] + bytes(4)
            zout.writestr(info.filename, data)
    return target


def test_tampered_or_foreign_archive_installs_nothing(tmp_path, models, capsys):
    runs, dataset = make_runs(tmp_path / "work")
    main(["export", str(runs), "-o", str(tmp_path / "m.zip")])
    capsys.readouterr()
    bad = _tamper(tmp_path / "m.zip", tmp_path / "bad.zip")
    foreign = tmp_path / "photos.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("cat.png", b"\x89PNG")
    for archive, message in ((bad, "differs from its sha256 in manifest.json (damaged or changed)"),
                             (foreign, "not a masam model archive (no manifest.json)")):  # fmt: skip
        assert main(["install", str(archive)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"masam install: error: {archive}: ") and message in err
        assert not models.exists()
        assert main(["predict", "-m", str(archive), "-i", str(dataset / "imagesTs"), "-o", str(tmp_path / "p")]) == 1
        assert message in capsys.readouterr().err and not (tmp_path / "p").exists()


def test_reinstalling_needs_force_and_replaces_whole(tmp_path, models, capsys):
    runs, _ = make_runs(tmp_path / "work")
    main(["export", str(runs), "-o", str(tmp_path / "a.zip"), "--name", "organs"])
    main(["export", str(runs), "-o", str(tmp_path / "b.zip"), "--name", "organs", "--folds", "0"])
    install_archive(tmp_path / "a.zip")
    capsys.readouterr()
    assert main(["install", str(tmp_path / "b.zip")]) == 1
    assert "a model named 'organs' is installed already (--force replaces it)" in capsys.readouterr().err
    assert sorted(p.name for p in (models / "organs" / "folds").iterdir()) == ["fold_0", "fold_1"]
    assert main(["install", str(tmp_path / "b.zip"), "--force"]) == 0
    assert sorted(p.name for p in (models / "organs" / "folds").iterdir()) == ["fold_0"]
    assert [p.name for p in models.iterdir()] == ["organs"]
    assert main(["install", str(tmp_path / "a.zip"), "--name", "../up"]) == 1
    assert "model name '../up' is not usable as a folder name" in capsys.readouterr().err


def test_unknown_model_name_is_one_line(tmp_path, models, capsys):
    assert main(["predict", "-m", "nothing_here", "-i", str(tmp_path), "-o", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"masam predict: error: nothing_here: no such file, run folder or installed model (in {models})"
