"""Issue 18 (the first hour on your own data): resume from the run folder alone, checks before
work, defaults that learn, one-line checkpoint errors, training feedback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from masam.cli import main
from masam.demo import _train_config
from masam.train import PRESETS
from masam.train.schedule import lr_at
from tests.data.helpers import make_dataset
from tests.train.helpers import TINY, assert_same, trained

BASE = ["--iterations", "9", "--batch-size", "2", "--val-every", "1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("first_hour") / "D", cases=3, shape=(6, 40, 48))


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder``: (mtime in ns, contents)."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def test_resume_needs_only_the_run_folder_and_refuses_changed_options(dataset, tmp_path, capsys):
    args = ["train", "-d", str(dataset), *TINY, *BASE]
    assert main([*args, "-o", str(tmp_path / "full")]) == 0
    part = tmp_path / "part"
    assert main([*args, "-o", str(part), "--stop-after", "4"]) == 0
    assert "continue with: masam train -o" in capsys.readouterr().out
    before = snapshot(part)
    code = main(["train", "-o", str(part), "--resume", "--image-size", "96", "--lr", "0.5", "--workers", "0"])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--image-size 96 (run: 64)" in err[0] and "--lr 0.5 (run: " in err[0]
    assert "--workers" not in err[0]  # one of the options that may change on resume
    assert snapshot(part) == before  # nothing written, nothing rebuilt
    assert main(["train", "-o", str(part), "--resume", "--workers", "0", "--quiet"]) == 0
    assert_same(trained(tmp_path / "full"), trained(part))


def test_resume_without_a_run_is_one_line(tmp_path, capsys):
    assert main(["train", "-o", str(tmp_path / "none"), "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_a_warmup_longer_than_the_run_is_clipped_with_a_warning(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "-d", str(dataset), "-o", str(run), *TINY, "--iterations", "4", "--batch-size", "2"]
    assert main([*args, "--warmup", "250", "--lr", "1e-3", "--power", "1", "--val-every", "0"]) == 0
    err = capsys.readouterr().err
    assert "warning: --warmup 250 is as long as the run (4 steps); clipped to 1 steps" in err
    lrs = [r["lr"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "lr" in r]
    # the schedule with the clipped warm-up reaches the peak (with 250 steps it would stay below 1.6e-5)
    assert lrs == pytest.approx([lr_at(s, 1e-3, 1, 1.0, 4) for s in range(4)])
    assert max(lrs) == pytest.approx(1e-3)


def test_the_scratch_preset_is_the_demos_recipe():
    demo = _train_config(Path("d"), Path("r"), 600, 0, "cpu")
    recipe = {k: v for k, v in PRESETS["scratch"].items() if k != "image_size"}
    assert recipe == {k: getattr(demo, k) for k in recipe}
    assert recipe["lr"] == 1e-3 and recipe["power"] == 1.0 and recipe["include_background"] is False
    assert demo.image_size == 64  # the phantom is small


def test_a_checkpoint_that_is_not_sam_fails_in_one_line_before_any_work(dataset, tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("model weights v1\nlr 1e-3\n")
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, other)
    for path, expected in ((text, "not a readable PyTorch checkpoint"), (other, "not a SAM checkpoint")):
        run = tmp_path / f"run_{path.stem}"
        for command in (
            ["train", "-d", str(dataset), "-o", str(run), "--sam-checkpoint", str(path)],
            ["predict", "-m", str(tmp_path / "none.safetensors"), "--sam-checkpoint", str(path), "-i", str(dataset),
             "-o", str(tmp_path / "pred")],
        ):  # fmt: skip
            assert main(command) == 1
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and str(path) in err[0] and expected in err[0], err
            assert "weights_only=False" not in err[0]
        assert not run.exists()


@pytest.mark.parametrize(
    "options, expected",
    [
        (["--arch", "vit_tny"], "unknown --arch 'vit_tny'"),
        (["--arch", "vit_tiny", "--image-size", "100"], "multiple of 16, got 100"),
        (["--sam-checkpoint", "missing.pth"], "missing.pth: no such file"),
    ],
)
def test_mistakes_are_caught_before_preprocessing_and_leave_no_folder(dataset, tmp_path, capsys, options, expected):
    run = tmp_path / "run"
    assert main(["train", "-d", str(dataset), "-o", str(run), *options]) == 1
    assert expected in capsys.readouterr().err
    assert not run.exists()


def test_an_unusable_dataset_is_refused_before_preprocessing(dataset, tmp_path, capsys):
    broken = make_dataset(tmp_path / "B", cases=2, shape=(6, 40, 48))
    (broken / "labelsTr" / "case01.nii.gz").write_bytes(b"not an image")
    run = tmp_path / "run"
    assert main(["train", "-d", str(broken), "-o", str(run), *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    # issue 28: check's table, a row per problem, not every problem on one line
    assert err[0] == f"masam train: error: {broken}: the dataset is not usable; masam check's report:"
    assert err[1] == f"Dataset {broken}: 2 cases checked"
    assert err[3].split() == ["case", "severity", "file", "problem"]
    assert err[4].split()[:3] == ["case01", "error", "labelsTr/case01.nii.gz"]
    assert err[-1] == "NOT usable: fix the errors above"
    assert not run.exists()


def test_more_folds_than_cases_suggests_num_folds(tmp_path, capsys):
    four = make_dataset(tmp_path / "F", cases=4, shape=(6, 40, 48))
    assert main(["train", "-d", str(four), "-o", str(tmp_path / "runs" / "fold_0"), "--fold", "0", *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"masam train: error: {four}: 5 folds need at least 5 cases, got 4; choose fewer folds, "
                       "e.g. --num-folds 4")  # fmt: skip


def test_train_uses_a_preprocess_cache_when_its_plan_fits(dataset, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["preprocess", "-d", str(dataset), "-o", str(cache), "--image-size", "64"]) == 0
    before = snapshot(cache)
    args = ["train", "-d", str(dataset), *TINY, "--iterations", "2", "--batch-size", "2", "--cache", str(cache)]
    assert main([*args, "-o", str(tmp_path / "run")]) == 0
    assert not (tmp_path / "run" / "cache").exists() and snapshot(cache) == before
    assert main([*args, "-o", str(tmp_path / "run96"), "--image-size", "96"]) == 1
    err = capsys.readouterr().err
    assert "the cache was made with other settings (image_size: cache 64, run 96)" in err
    assert not (tmp_path / "run96").exists()


def test_training_tells_what_it_does_and_logs_classes_by_name(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "-d", str(dataset), "-o", str(run), *TINY, *BASE]) == 0
    out = capsys.readouterr().out
    assert "training on 2 case(s)" in out and "held out for validation: 1 case(s)" in out
    assert "9 steps on cpu;" in out and "trainable parameters of" in out
    val_lines = [line for line in out.splitlines() if line.startswith("validation at epoch")]
    assert len(val_lines) == 2 and "organ_a" in val_lines[0] and "organ_b" in val_lines[0]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    val = [r for r in records if "val_dice" in r]
    assert {"val_dice_organ_a", "val_dice_organ_b"} <= val[-1].keys()
    table = out[out.index("finished after 9 steps") :]
    best = max(val, key=lambda r: r["val_dice"])
    row = f"  {'organ_a':<22}{best['val_dice_organ_a']:>18.3f}{val[-1]['val_dice_organ_a']:>10.3f}"
    assert row in table.splitlines()
    assert str(run / "model_best.safetensors") in table and "tensorboard --logdir" in table
