"""``masam predict`` as a whole (issue 28): the models used are named, runs of different kinds are
not averaged, prompts that do nothing or are missing are said, the prompt file is checked first.

The models are tiny and their forward pass is replaced by :func:`fake_forward` (organ where the
image is organ-bright, the lesion inside a box), so each test knows what the output must be."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import SimpleITK as sitk

import masam
from masam.cli import main
from masam.data import Normalization
from masam.infer import Predictor
from masam.infer.postprocess import write_postprocessing
from masam.infer.predict_files import MARKER, stored_class_names
from tests.infer.test_prompt_cli import fake_model, write_image  # noqa: F401 - fixture

__all__ = ["fake_model"]


def write_run(
    folder: Path, *, fold: int | None = None, prompt: str = "none", image_size: int = 32, labels=None, **meta
) -> Path:
    """A run folder with a tiny model (``model_best.safetensors``) and its ``config.json``."""
    options = {"label_names": labels} if labels else None
    model = masam.load_model(arch="vit_tiny", num_classes=2, image_size=image_size, rank=4, model_options=options)
    model.metadata = {"normalization": Normalization("CT").to_dict(), "prompt": prompt, **meta}
    folder.mkdir(parents=True)
    masam.save_weights(model, folder / "model_best.safetensors")
    fold_value = None if fold is None else str(fold)
    (folder / "config.json").write_text(json.dumps({"train": {"fold": fold_value, "prompt": prompt}}))
    return folder


def predict(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", "--quiet", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_folder_of_folds_is_named_with_its_models_and_post_processing(fake_model, tmp_path, capsys):
    runs = tmp_path / "runs"
    for fold in (0, 1):
        write_run(runs / f"fold_{fold}", fold=fold)
        write_postprocessing(runs / f"fold_{fold}" / "postprocessing.json", {1: True, 2: False})
    write_image(tmp_path / "in", "case")
    code, out, _ = predict(capsys, "-m", str(runs), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert code == 0 and (tmp_path / "out" / "case.nii.gz").is_file()
    lines = out.splitlines()
    assert lines[0] == (
        f"models: 2 folds of {runs} ({runs}/fold_0/model_best.safetensors, {runs}/fold_1/model_best.safetensors), "
        "softmax probabilities averaged"
    )
    assert lines[1] == f"post-processing: largest component kept for class(es) 1 ({runs}/fold_0/postprocessing.json)"
    args = ("-i", str(tmp_path / "in"), "-o", str(tmp_path / "o2"), "--no-postprocessing")
    code, out, _ = predict(capsys, "-m", str(runs / "fold_1"), *args)
    assert out.splitlines()[:2] == [f"model: {runs}/fold_1/model_best.safetensors",
                                    "post-processing: off (--no-postprocessing)"]  # fmt: skip


def test_a_folder_of_runs_of_several_kinds_is_refused_with_how_to_choose(fake_model, tmp_path, capsys):
    runs = tmp_path / "runs"
    write_run(runs / "scratch")
    write_run(runs / "fold_0", fold=0)
    write_run(runs / "box", prompt="box", box_label=None, prompt_dropout=0.0)
    write_image(tmp_path / "in", "case")
    code, out, err = predict(capsys, "-m", str(runs), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert code == 1 and not (tmp_path / "out").exists()
    assert err == (
        f"masam predict: error: {runs}: holds runs that are not folds of one cross-validation (box, fold_0, "
        f"scratch); choose with -m {runs}/box (one model) or -m {runs}/box {runs}/fold_0 (an ensemble)\n"
    )
    assert main(["postprocess", "-m", str(runs)]) == 1  # the same rule, the same line
    assert "not folds of one cross-validation" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("other", "what"),
    [({"prompt": "box", "box_label": None, "prompt_dropout": 0.0}, "prompt"), ({"image_size": 64}, "input")],
)
def test_an_ensemble_of_different_kinds_is_refused(fake_model, tmp_path, capsys, other, what):
    a = write_run(tmp_path / "a")
    b = write_run(tmp_path / "b", **other)
    write_image(tmp_path / "in", "case")
    code, _, err = predict(capsys, "-m", str(a), str(b), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"))
    assert code == 1 and err.startswith(f"masam predict: error: {b}: {what} ")
    assert err.rstrip().endswith(f"an ensemble needs models with the same {what}: give one model (-m {a}) or only "
                                 "runs of one kind")  # fmt: skip


def test_a_box_to_a_model_trained_without_prompts_is_one_warning_line(fake_model, tmp_path, capsys):
    run = write_run(tmp_path / "plain")
    write_image(tmp_path / "in", "case")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"case": {"9": [11, 9, 19, 16]}}))
    code, _, err = predict(capsys, "-m", str(run), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                           "--boxes", str(boxes))  # fmt: skip
    assert code == 0
    assert err.splitlines() == [
        "masam predict: warning: case: a box prompt to a model trained without prompts: the box changes the result "
        "unpredictably and does not confine it; predict without --boxes"
    ]


def test_a_box_only_model_without_boxes_is_refused_and_warned_in_python(fake_model, tmp_path, capsys):
    run = write_run(tmp_path / "box", prompt="box", box_label=2, prompt_dropout=0.0)
    path, _ = write_image(tmp_path / "in", "case")
    code, _, err = predict(capsys, "-m", str(run), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"))
    assert code == 1 and not (tmp_path / "o").exists()
    assert err == (
        "masam predict: error: model box/model_best: trained with box prompts only (no --prompt-dropout), it segments "
        "almost nothing without a box; give --boxes FILE or --boxes-from-labels FOLDER\n"
    )
    result = Predictor.from_files(run).predict(path)
    assert result.warnings[0].startswith("no box for a model trained with box prompts only")
    dropout = write_run(tmp_path / "dropout", prompt="box", box_label=2, prompt_dropout=0.5)
    assert Predictor.from_files(dropout).predict(path).warnings == []


def test_a_misspelt_case_in_the_prompt_file_is_an_error_before_any_work(fake_model, tmp_path, capsys):
    run = write_run(tmp_path / "box", prompt="box", box_label=2, prompt_dropout=0.5)
    write_image(tmp_path / "in", "case_001")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"case_01": {"9": [11, 9, 19, 16]}}))
    code, _, err = predict(capsys, "-m", str(run), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                           "--boxes", str(boxes))  # fmt: skip
    assert code == 1 and not (tmp_path / "o").exists()
    assert err == f"masam predict: error: {boxes}: case 'case_01' is not among the inputs (did you mean 'case_001'?)\n"


def test_evaluate_and_report_name_the_classes_the_model_stores(fake_model, tmp_path, capsys):
    run = write_run(tmp_path / "run", labels={"background": 0, "organ": 1, "tumour": 2})
    path, truth = write_image(tmp_path / "in", "case_0000")
    (tmp_path / "ref").mkdir()
    reference = sitk.ReadImage(str(path))
    label = sitk.GetImageFromArray(truth)
    label.CopyInformation(reference)
    sitk.WriteImage(label, str(tmp_path / "ref" / "case.nii.gz"))
    code, _, _ = predict(capsys, "-m", str(run), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "pred"))
    assert code == 0 and stored_class_names(tmp_path / "pred") == {1: "organ", 2: "tumour"}
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "-p", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "-o", str(metrics)]) == 0
    assert set(json.loads(metrics.read_text())["mean_per_class"]) == {"organ", "tumour"}
    assert "tumour" in capsys.readouterr().out
    (tmp_path / "pred" / MARKER).unlink()  # the run's model names them too
    assert stored_class_names(tmp_path / "pred", run) == {1: "organ", 2: "tumour"}
    assert stored_class_names(tmp_path / "pred") is None
    page = tmp_path / "report.html"
    args = ["-i", str(tmp_path / "in"), "-p", str(tmp_path / "pred"), "-r", str(tmp_path / "ref"), "-o", str(page)]
    assert main(["report", *args, "--run", str(run)]) == 0
    html = page.read_text()
    assert "organ (prediction, 1)" in html and "tumour (prediction, 2)" in html and "1 (prediction" not in html


def test_box_prompts_with_an_ensemble_or_mirroring_are_refused(fake_model, tmp_path, capsys):
    a = write_run(tmp_path / "a", prompt="box", box_label=2, prompt_dropout=0.5)
    b = write_run(tmp_path / "b", prompt="box", box_label=2, prompt_dropout=0.5)
    write_image(tmp_path / "in", "case")
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"case": {"9": [11, 9, 19, 16]}}))
    args = ("-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--boxes", str(boxes))
    code, _, err = predict(capsys, "-m", str(a), str(b), *args)
    assert code == 1 and err == ("masam predict: error: box prompts reach one model without mirroring, not an "
                                 "ensemble of 2 models; give one model without --tta\n")  # fmt: skip
    code, _, err = predict(capsys, "-m", str(a), "--tta", *args)
    assert code == 1 and "not --tta" in err and not (tmp_path / "o").exists()
    assert predict(capsys, "-m", str(a), *args)[0] == 0
