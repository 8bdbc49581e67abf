"""The HTML report: radiological orientation from the image's direction, overlays, slice choice, and
a self-contained page whose images all decode."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from masam.eval import evaluate_folders
from masam.eval.drawing import choose_slices, class_colour
from masam.eval.report import ReportError, case_panels, class_values, find_report_cases, write_report
from masam.train.progress import plot_progress
from tests.data.helpers import write_volume

SPACING = (0.8, 1.0, 2.5)  # x, y, z (mm)
NAMES = {1: "liver", 2: "kidney"}


def body(shape=(8, 30, 36), seed=0):
    """Image ``[z, y, x]`` (LPS: x to the patient's left, y to posterior) with a liver block on the
    patient's right-anterior side and a kidney posterior-left, and a prediction with one error."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 5, shape).astype(np.float32)
    ref = np.zeros(shape, np.uint8)
    ref[1:7, 4:12, 3:12] = 1  # small y (anterior), small x (patient's right)
    ref[2:6, 18:26, 22:30] = 2
    image[ref == 1] += 60
    image[ref == 2] += 120
    pred = ref.copy()
    pred[4, 4:12, 3:8] = 0  # slice 4 misses half the liver
    return image, ref, pred


def write_case(folder, name, arrays, spacing=SPACING, direction=None, origin=(0.0, 0.0, 0.0)):
    paths = []
    for sub, array in zip(("images", "preds", "refs"), arrays):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        suffix = "_0000" if sub == "images" else ""
        paths.append(write_volume(folder / sub / f"{name}{suffix}.nii.gz", array, spacing, origin, direction))
    return paths


def decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def panels_of(folder, name):
    (case,) = [c for c in find_report_cases(folder / "images", folder / "preds", folder / "refs") if c.name == name]
    return [(decode(png), caption) for png, caption in case_panels(case, NAMES, width=144)]


def test_a_flipped_or_permuted_direction_displays_identically(tmp_path):
    image, ref, pred = body()
    write_case(tmp_path, "plain", (image, pred, ref))
    # the same patient stored with x and y reversed: direction -1, origin at the other end
    flip = (slice(None), slice(None, None, -1), slice(None, None, -1))
    origin = ((image.shape[2] - 1) * SPACING[0], (image.shape[1] - 1) * SPACING[1], 0.0)
    write_case(tmp_path, "flipped", (image[flip], pred[flip], ref[flip]), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1),
               origin=origin)  # fmt: skip
    # stored as [y, z, x]: array axes x, z, y in SimpleITK order, spacing and direction permuted to match
    perm = [np.ascontiguousarray(a.transpose(1, 0, 2)) for a in (image, pred, ref)]
    write_case(tmp_path, "permuted", perm, spacing=(SPACING[0], SPACING[2], SPACING[1]),
               direction=(1, 0, 0, 0, 0, 1, 0, 1, 0))  # fmt: skip
    plain = panels_of(tmp_path, "plain")
    assert len(plain) >= 3
    for other in ("flipped", "permuted"):
        panels = panels_of(tmp_path, other)
        assert [c for _, c in panels] == [c for _, c in plain]
        for (a, _), (b, _) in zip(plain, panels):
            assert np.array_equal(a, b)


def test_anterior_up_and_patient_right_on_the_left(tmp_path):
    image, ref, pred = body()
    flip = (slice(None), slice(None, None, -1), slice(None, None, -1))
    # stored reversed: the liver sits at the array's far corner but is physically right-anterior
    write_case(tmp_path, "flipped", (image[flip], pred[flip], ref[flip]), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    drawing, caption = panels_of(tmp_path, "flipped")[0]
    liver = np.all(drawing == class_colour(1), axis=-1)
    kidney = np.all(drawing == class_colour(2), axis=-1)
    rows, cols = np.nonzero(liver)
    h, w = liver.shape
    assert rows.max() < h / 2 and cols.max() < w / 2  # top left: anterior, patient's right
    rows, cols = np.nonzero(kidney)
    assert rows.min() > h / 2 and cols.min() > w / 2
    assert (h, w) == (round(144 * 30 * 1.0 / (36 * 0.8)), 144)  # square millimetres


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.tags = [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def build_report(folder):
    """Three cases, their evaluation, a run folder with progress.png, and the report: (path, results)."""
    for i in range(3):
        write_case(folder, f"case{i}", body(seed=i))
    results = evaluate_folders(folder / "preds", folder / "refs", class_names=NAMES)
    run = folder / "run"
    run.mkdir()
    records = [{"step": s, "epoch": s // 5, "lr": 1e-3, "loss": 1 / s} for s in range(1, 20)]
    plot_progress(records, run / "progress.png")
    cases = find_report_cases(folder / "images", folder / "preds", folder / "refs")
    return write_report(folder / "report.html", results, cases, run_dir=run, class_names=NAMES), results


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return build_report(tmp_path_factory.mktemp("report"))


def test_report_is_self_contained_and_every_image_decodes(report):
    path, results = report
    text = path.read_text()
    parser = Images()
    parser.feed(text)
    assert "script" not in parser.tags and not re.search(r"(src|href)=['\"]?(https?:|//|file:)", text)
    panel_count = sum(len(choose_slices(*body(seed=i)[1:][::-1], NAMES)) for i in range(3))
    assert len(parser.sources) == 3 + 1 + panel_count  # box plots, training curves, slices
    for src in parser.sources:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        assert image.size[0] > 50 and image.size[1] > 50
    for row in results["cases"]:
        assert f"id='case-{row['case']}'" in text
        assert f"{row['classes']['liver']['dice']:.3f}" in text
    assert f"{results['mean']['dice']:.3f}" in text and "liver (prediction, 1)" in text
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".tmp")] == []


def test_missing_training_curves_and_unknown_classes(tmp_path, report):
    _, results = report
    write_case(tmp_path, "c", body())
    cases = find_report_cases(tmp_path / "images", tmp_path / "preds", tmp_path / "refs")
    path = write_report(tmp_path / "r.html", results, cases, run_dir=tmp_path / "empty_run", class_names=NAMES)
    assert "progress.png does not exist" in path.read_text()
    with pytest.raises(ReportError, match="class 'liver' of the results has no label value"):
        class_values(results, None)
    (tmp_path / "no_preds").mkdir()
    with pytest.raises(ReportError, match="no_preds: no prediction matches"):
        find_report_cases(tmp_path / "images", tmp_path / "no_preds")
    with pytest.raises(ReportError, match="missing: no such folder"):
        find_report_cases(tmp_path / "images", tmp_path / "missing")


def test_report_command_writes_one_page_with_the_cases_and_numbers(tmp_path, capsys):
    from masam.cli import main

    image, ref, pred = body()
    write_case(tmp_path, "case_a", (image, pred, ref))
    out = tmp_path / "r" / "report.html"
    argv = ["report", "-i", str(tmp_path / "images"), "-p", str(tmp_path / "preds"), "-r", str(tmp_path / "refs")]
    assert main([*argv, "-o", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    page = out.read_text()
    assert "id='case-case_a'" in page and "src='http" not in page
    expected = (2 * ((pred == 1) & (ref == 1)).sum()) / ((pred == 1).sum() + (ref == 1).sum())
    assert f"{expected:.3f}" in page  # the liver's Dice, computed here, is in the table
    (tmp_path / "no_images").mkdir()
    argv[2] = str(tmp_path / "no_images")
    assert main([*argv, "-o", str(out)]) == 1
    assert "no prediction matches an image" in capsys.readouterr().err  # one line, no traceback
