"""The run folder as code (issue 25): file names, settings, the designated model, folders of folds.

Weights files are empty placeholders: which file is chosen depends on names and settings only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from masam.errors import InputError, MissingFileError
from masam.infer.predict_files import model_paths
from masam.run_folder import CacheFolder, RunFolder, find_weights, is_folder_of_runs, runs_in


def make_run(path: Path, models=("best", "last"), **train) -> RunFolder:
    run = RunFolder(path)
    path.mkdir(parents=True)
    for which in models:
        (run.best_model if which == "best" else run.last_model).write_bytes(b"")
    run.write_config(train, {"arch": "vit_tiny"})
    return run


def test_the_file_names_of_a_run_folder(tmp_path):
    run = RunFolder(tmp_path / "r")
    names = {
        run.config_file: "config.json", run.best_model: "model_best.safetensors",
        run.last_model: "model_last.safetensors", run.snapshot(20): "model_epoch_20.safetensors",
        run.state_file: "training_state.pt", run.log_file: "log.jsonl", run.progress_file: "progress.png",
        run.tensorboard_dir: "tensorboard", run.validation_dir: "validation",
        run.postprocessing_file: "postprocessing.json",
    }  # fmt: skip
    for path, name in names.items():
        assert path == tmp_path / "r" / name
    assert run.shared_splits_file == tmp_path / "splits_final.json"
    assert run.cache().path == tmp_path / "r" / "cache" and run.cache("elsewhere").path == Path("elsewhere")
    cache = CacheFolder(tmp_path / "c")
    assert [p.name for p in cache.case_files("a")] == ["a_image.npy", "a_label.npy", "a.json"]
    assert cache.plan_file.name == "plan.json"


def test_settings_are_written_and_read_back(tmp_path):
    run = make_run(tmp_path / "r", fold="1", predict_with="last", dataset="/data/x")
    assert json.loads(run.config_file.read_text()) == {
        "train": {"fold": "1", "predict_with": "last", "dataset": "/data/x"}, "model": {"arch": "vit_tiny"}
    }
    assert run.train_settings()["dataset"] == "/data/x" and run.fold() == 1 and run.predict_with() == "last"
    assert make_run(tmp_path / "s").fold() is None and RunFolder(tmp_path / "s").predict_with() == "best"


def test_an_unreadable_or_missing_config_is_one_clear_error(tmp_path):
    with pytest.raises(MissingFileError, match=f"{tmp_path}: not a training run folder"):
        RunFolder(tmp_path).train_settings()
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="config.json: cannot read the run settings"):
        RunFolder(tmp_path).train_settings()
    assert RunFolder(tmp_path).predict_with() == "best"  # the default where the settings cannot be read


@pytest.mark.parametrize(("predict_with", "models", "chosen"), [
    ("best", ("best", "last"), "model_best.safetensors"),
    ("best", ("last",), "model_last.safetensors"),
    ("last", ("best", "last"), "model_last.safetensors"),
])  # fmt: skip
def test_the_designated_model(tmp_path, predict_with, models, chosen):
    run = make_run(tmp_path / "r", models, predict_with=predict_with)
    assert run.model() == find_weights(run.path) == tmp_path / "r" / chosen
    assert find_weights(tmp_path / "w.safetensors") == tmp_path / "w.safetensors"


def test_a_run_designating_a_missing_model_names_it(tmp_path):
    run = make_run(tmp_path / "r", ("best",), predict_with="last")
    with pytest.raises(MissingFileError, match="r: a run folder without model_last.safetensors"):
        run.model()


def test_model_paths_honour_predict_with_as_find_weights_does(tmp_path):
    """``-m runs`` of fold runs trained with ``--predict-with last``: each fold's last model (the code
    before issue 25 returned the folders, which counted as runs by their best model)."""
    runs = tmp_path / "runs"
    for fold in (0, 1):
        make_run(runs / f"fold_{fold}", fold=str(fold), predict_with="last")
    expected = [runs / "fold_0" / "model_last.safetensors", runs / "fold_1" / "model_last.safetensors"]
    assert model_paths([runs]) == expected
    assert model_paths([runs / "fold_1", runs / "fold_0" / "model_best.safetensors"]) == [
        expected[1], runs / "fold_0" / "model_best.safetensors"
    ]
    (runs / "fold_1" / "model_last.safetensors").unlink()
    with pytest.raises(MissingFileError, match="fold_1: a run folder without model_last.safetensors"):
        model_paths([runs])


def test_a_folder_of_folds_and_a_folder_of_mixed_runs(tmp_path):
    runs = tmp_path / "runs"
    folds = [make_run(runs / f"fold_{f}", fold=str(f)) for f in (1, 0)]
    assert runs_in(runs) == sorted(folds, key=lambda r: r.path) and is_folder_of_runs(runs)
    assert runs_in(folds[0].path) == [folds[0]] and not is_folder_of_runs(folds[0].path)
    make_run(runs / "scratch")
    with pytest.raises(InputError, match="holds runs that are not folds of one cross-validation"):
        runs_in(runs)
