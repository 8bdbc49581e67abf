"""masam demo end to end, with few steps (the full demo is `make demo`)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import SimpleITK as sitk

import masam.demo
from masam.cli import main
from masam.demo import phantom_case
from masam.train import Interrupted, Trainer
from tests.conftest import ROOT


def test_phantom_has_organs_of_different_sizes_and_intensities():
    image, label = phantom_case(0)
    counts = np.bincount(label.ravel(), minlength=4)
    assert counts[1] > counts[3] > 0 and counts[2] > 0  # liver largest; kidneys and spine present
    means = [image[label == c].mean() for c in range(1, 4)]
    assert len({round(m, -1) for m in means}) == 3


def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path), "--iterations", "8", "--cases", "3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert out[-1] == f"mean Dice: {metrics['mean']['dice']:.4f}"  # issue 28: the last line, from the metrics
    assert f"report:      {tmp_path / 'report.html'}" in out
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert (tmp_path / "run" / "progress.png").is_file()
    predictions = sorted((tmp_path / "predictions").glob("*.nii.gz"))
    assert len(predictions) == 3
    reference = sitk.ReadImage(str(tmp_path / "dataset" / "imagesTs" / "phantom_003_0000.nii.gz"))
    written = sitk.ReadImage(str(predictions[0]))
    assert written.GetSpacing() == reference.GetSpacing() and written.GetSize() == reference.GetSize()
    assert list((tmp_path / "predictions" / "overlays").glob("*.png"))
    assert set(metrics["mean_per_class"]) == {"liver", "kidney", "spine"}


def test_demo_runs_twice_in_the_same_folder(tmp_path, capsys):
    for _ in range(2):
        assert main(["demo", "-o", str(tmp_path), "--iterations", "2", "--cases", "2"]) == 0
    out = capsys.readouterr()
    assert f"replacing the previous demo results in {tmp_path}" in out.out
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["output"] == str(tmp_path / "run")
    assert not list(tmp_path.parent.glob(f".{tmp_path.name}.*"))  # no staging folder left
    assert "holds predictions of another model" not in out.err and "holds files" not in out.err
    assert len(list((tmp_path / "predictions").glob("*.nii.gz"))) == 3


def snapshot(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["training", "prediction"])
def test_an_interrupted_demo_is_one_line_and_leaves_the_previous_results(tmp_path, capsys, monkeypatch, where):
    out = tmp_path / "demo_output"
    (out / "run").mkdir(parents=True)
    (out / "run" / "config.json").write_text('{"train": {}}')
    (out / "report.html").write_text("<!DOCTYPE html> the previous demo")
    before = snapshot(out)

    def stop(*_args, **_kwargs):
        raise Interrupted(2) if where == "training" else KeyboardInterrupt

    monkeypatch.setattr(Trainer if where == "training" else masam.demo, "run" if where == "training" else
                        "_predict_and_evaluate", stop)  # fmt: skip
    assert main(["demo", "-o", str(out), "--iterations", "2", "--cases", "2"]) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"masam demo: stopped by signal 2; the demo results in {out} are unchanged"
    assert not any("Traceback" in line for line in err)
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["demo_output"]


def test_the_demo_refuses_a_folder_it_did_not_write(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "-o", str(tmp_path), "--iterations", "2", "--cases", "2"]) == 1
    assert "exists but holds no masam demo" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def readme_python_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n", text.index("## Use from Python")) + len("```python\n")
    return text[start : text.index("```\n", start)]


def test_the_readme_python_snippet_runs_from_a_demo_run_folder(tmp_path, monkeypatch, capsys):
    """Issue 28: the README's Python snippet, as written, against a tiny run in the demo's layout."""
    import masam
    from masam.data import Normalization, read_volume
    from masam.data.normalize import spec_for

    model = masam.load_model(arch="vit_tiny", num_classes=3, image_size=32, rank=4)
    model.input_spec = spec_for(Normalization("CT"), ("CT",), 5, 32)
    (tmp_path / "demo_output" / "run").mkdir(parents=True)
    masam.save_weights(model, tmp_path / "demo_output" / "run" / "model_best.safetensors")
    image = tmp_path / "demo_output" / "dataset" / "imagesTs" / "phantom_016_0000.nii.gz"
    image.parent.mkdir(parents=True)
    array, _ = phantom_case(16, shape=(8, 40, 48))
    itk = sitk.GetImageFromArray(array)
    itk.SetSpacing((1.2, 1.2, 3.0))
    sitk.WriteImage(itk, str(image))
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_snippet(), "README.md", "exec"), {})  # noqa: S102 - the README's own code
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Prediction(phantom_016_0000.nii.gz: labels [8, 40, 48] uint8")
    assert out[1] == "torch.Size([1, 5, 4, 32, 32])"
    written = read_volume(tmp_path / "phantom_016.nii.gz")
    assert written.array.shape == (8, 40, 48) and np.allclose(written.spacing, (1.2, 1.2, 3.0))


def test_the_readme_demo_section_states_no_dice_that_could_drift():
    """Issue 28: the README's demo figures disagreed with what the demo printed. The section says
    where the figures are (the last line, metrics.json) and states none of its own."""
    text = (ROOT / "README.md").read_text()
    start = text.index("## Demo")
    section = text[start : text.index("\n## ", start)]
    assert "`mean Dice: 0.xxxx`" in section and "metrics.json" in section
    assert not re.search(r"Dice\W+(is\W+)?\**0\.\d", section.replace("0.xxxx", "")), "a Dice figure in the README"
    assert "reaches 0." not in text[: text.index("## Demo")]
