"""One self-contained HTML report: metrics table, box plots, training curves and per-case overlays.

Every image is a PNG embedded as a ``data:`` URI; the page has no script, no external file and no
network access, so it opens offline in any browser and can be mailed as one file. Slices are drawn
as radiology viewers show them (see :mod:`masam.eval.drawing`): axial, anterior up, the patient's
right on the image's left. Each case shows its worst slice per class (lowest 2D Dice among the
slices where the prediction or the reference has the class) and evenly spaced slices through the
structures, with the reference as a white band and the prediction in the class colour.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from ..data.io import VOLUME_SUFFIXES, read_label, read_volume, strip_suffix
from ..errors import InputError, OutputError
from ..fileio import atomic_path
from ..run_folder import RunFolder
from .drawing import REFERENCE_COLOUR, class_colour, volume_panels
from .evaluate import METRICS

METRIC_TITLES = {"dice": "Dice", "hd95": "HD95 (mm)", "nsd": "NSD"}


class ReportError(ValueError):
    """Inputs the report cannot use; the message names the file or value and the problem."""


@dataclass
class ReportCase:
    """One case's files: the image, the predicted label map and (optionally) the reference."""

    name: str
    image: Path
    prediction: Path
    reference: Path | None = None


def find_report_cases(
    images: str | os.PathLike, predictions: str | os.PathLike, references: str | os.PathLike | None = None
) -> list[ReportCase]:
    """Match ``CASE_0000.nii.gz`` (or ``CASE.nii.gz``) images with ``CASE.*`` predictions and
    references by name; images without a prediction are left out."""

    def files(folder: Path, drop_channel: bool) -> dict[str, Path]:
        if not folder.is_dir():
            raise ReportError(f"{folder}: no such folder")
        out = {}
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or not (p.is_dir() or p.name.lower().endswith(VOLUME_SUFFIXES)):
                continue
            name = strip_suffix(p.name)
            if drop_channel and name.endswith("_0000"):
                name = name[:-5]
            out[name] = p
        return out

    image_files, pred_files = files(Path(images), True), files(Path(predictions), False)
    ref_files = files(Path(references), False) if references is not None else {}
    cases = [ReportCase(n, image_files[n], pred_files[n], ref_files.get(n)) for n in sorted(image_files)
             if n in pred_files]  # fmt: skip
    if not cases:
        raise ReportError(f"{predictions}: no prediction matches an image of {images}")
    return cases


def _png_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _rgb_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def case_panels(
    case: ReportCase, classes: Mapping[int, str], width: int = 288, evenly: int = 3
) -> list[tuple[bytes, str]]:
    """PNG drawings of the chosen slices of one case (:func:`masam.eval.drawing.volume_panels`),
    each with its caption."""
    volume = read_volume(case.image)
    pred = read_label(case.prediction, volume).array
    ref = read_label(case.reference, volume).array if case.reference is not None else None
    return [(_rgb_png(rgb), caption) for rgb, caption in volume_panels(volume, pred, ref, classes, width, evenly)]


def box_plot(results: dict, metric: str) -> bytes:
    """One box per class of ``metric`` over the cases, as PNG bytes."""
    names = list(results["mean_per_class"])
    values = [[row["classes"][n][metric] for row in results["cases"] if n in row["classes"]] for n in names]
    figure = Figure(figsize=(max(3.0, 0.9 * len(names) + 1.5), 3.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.boxplot(values, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30 if len(names) > 4 else 0)
    ax.set_title(METRIC_TITLES[metric])
    if metric in ("dice", "nsd"):
        ax.set_ylim(-0.02, 1.02)
    ax.grid(axis="y", alpha=0.3)
    return _figure_png(figure)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 1.5em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.mean td { font-weight: bold; border-top: 2px solid #888; }
.legend span { display: inline-block; margin-right: 1.2em; white-space: nowrap; }
.swatch { display: inline-block; width: 1.6em; height: 0.8em; margin-right: 0.35em; vertical-align: middle;
          border: 1px solid #666; }
.panels { display: flex; flex-wrap: wrap; gap: 0.8em; }
figure { margin: 0; } figure img { display: block; image-rendering: pixelated; background: #000; }
figcaption { font-size: 0.8em; color: #444; max-width: 288px; }
.note { color: #666; font-size: 0.9em; }
"""


def class_values(results: dict, class_names: Mapping[int, str] | None) -> dict[int, str]:
    """``{label value: name}`` of the classes in ``results`` (keyed by name, or by the value as text)."""
    by_name = {name: value for value, name in (class_names or {}).items()}
    out = {}
    for name in results["mean_per_class"]:
        if name in by_name:
            out[int(by_name[name])] = name
        elif str(name).isdigit():
            out[int(name)] = name
        else:
            raise ReportError(f"class {name!r} of the results has no label value: give class_names {{value: name}}")
    return out


def _cell(metric: str, value: float) -> str:
    if metric in ("dice", "nsd"):  # red (0) to green (1)
        return f'<td style="background: hsl({120 * min(max(value, 0), 1):.0f}, 65%, 85%)">{value:.3f}</td>'
    return f"<td>{value:.2f}</td>"


def metric_tables(results: dict) -> str:
    """One table per metric: a row per case, a column per class, then the means."""
    names = list(results["mean_per_class"])
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    parts = []
    for metric in METRICS:
        rows = []
        for row in results["cases"]:
            cells = "".join(_cell(metric, row["classes"][n][metric]) for n in names)
            case_mean = float(np.mean([row["classes"][n][metric] for n in names]))
            rows.append(f"<tr><td><a href='#case-{html.escape(row['case'])}'>{html.escape(row['case'])}</a></td>"
                        f"{cells}{_cell(metric, case_mean)}</tr>")  # fmt: skip
        means = "".join(_cell(metric, results["mean_per_class"][n][metric]) for n in names)
        rows.append(f"<tr class='mean'><td>mean</td>{means}{_cell(metric, results['mean'][metric])}</tr>")
        parts.append(f"<h3>{METRIC_TITLES[metric]}</h3><table><tr><th>case</th>{head}<th>mean</th></tr>"
                     + "".join(rows) + "</table>")  # fmt: skip
    return "\n".join(parts)


def legend(classes: Mapping[int, str]) -> str:
    items = [f"<span><i class='swatch' style='background: rgb{class_colour(c)}'></i>{html.escape(n)} "
             f"(prediction, {c})</span>" for c, n in classes.items()]  # fmt: skip
    swatch = f"<i class='swatch' style='background: rgb{REFERENCE_COLOUR}'></i>"
    items.append(f"<span>{swatch}reference (all classes)</span>")
    return "<p class='legend'>" + "".join(items) + "</p>"


def _case_numbers(row: dict | None) -> str:
    if row is None:
        return "<p class='note'>no metrics for this case</p>"
    lines = "".join(
        f"<tr><td>{html.escape(n)}</td>{''.join(_cell(m, v[m]) for m in METRICS)}</tr>"
        for n, v in row["classes"].items()
    )
    head = "".join(f"<th>{METRIC_TITLES[m]}</th>" for m in METRICS)
    return f"<table><tr><th>class</th>{head}</tr>{lines}</table>"


def case_section(case: ReportCase, row: dict | None, classes: Mapping[int, str], width: int) -> str:
    figures = "".join(
        f"<figure><img src='{_png_uri(png)}' width='{width}' alt='{html.escape(caption)}'>"
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for png, caption in case_panels(case, classes, width)
    )
    title = html.escape(case.name)
    body = f"{_case_numbers(row)}<div class='panels'>{figures}</div>"
    return f"<section id='case-{title}'><h3>{title}</h3>{body}</section>"


def training_section(run_dir: Path) -> str:
    """The run's ``progress.png`` (written by training, or by ``masam.train.progress.plot_progress``)."""
    curves = RunFolder(run_dir).progress_file
    if not curves.is_file():
        return (f"<p class='note'>{html.escape(str(curves))} does not exist: training writes it at every "
                "validation; plot it from log.jsonl with masam.train.progress.plot_progress.</p>")  # fmt: skip
    image = f"<img src='{_png_uri(curves.read_bytes())}' alt='training curves'>"
    return f"<p class='note'>{html.escape(str(run_dir))}</p>{image}"


def write_report(
    path: str | os.PathLike,
    results: dict,
    cases: Sequence[ReportCase],
    run_dir: str | os.PathLike | None = None,
    class_names: Mapping[int, str] | None = None,
    title: str = "masam report",
    width: int = 288,
) -> Path:
    """Write the HTML report to ``path`` atomically and return it.

    ``results``: :func:`masam.eval.evaluate_folders`'s dictionary; ``cases``: the files to draw
    (:func:`find_report_cases`); ``run_dir``: a training run whose ``progress.png`` is shown;
    ``class_names``: ``{label value: name}`` as given to ``evaluate_folders``; ``width``: pixels of
    each slice drawing.
    """
    classes = class_values(results, class_names)
    rows = {row["case"]: row for row in results["cases"]}
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='note'>{len(results['cases'])} cases, {len(classes)} classes, NSD tolerance "
        f"{results.get('nsd_tolerance_mm', '?')} mm; written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC</p>",
        "<p><a href='#metrics'>metrics</a> · <a href='#boxplots'>box plots</a>"
        + (" · <a href='#training'>training</a>" if run_dir is not None else "")
        + " · <a href='#cases'>cases</a></p>",
        "<h2 id='metrics'>Metrics</h2>",
        metric_tables(results),
        "<h2 id='boxplots'>Per class over the cases</h2><div class='panels'>"
        + "".join(f"<img src='{_png_uri(box_plot(results, m))}' alt='{METRIC_TITLES[m]} box plot'>" for m in METRICS)
        + "</div>",
    ]
    if run_dir is not None:
        sections += ["<h2 id='training'>Training</h2>", training_section(Path(run_dir))]
    sections += [
        "<h2 id='cases'>Cases</h2>",
        "<p class='note'>Axial slices as radiology viewers show them: anterior up, the patient's right on the "
        "image's left (the image's direction read, volumes reoriented to LPS).</p>",
        legend(classes),
    ]
    sections += [case_section(case, rows.get(case.name), classes, width) for case in cases]
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<link rel='icon' href='data:,'><title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        "<body>\n" + "\n".join(sections) + "\n</body></html>\n"
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def report_folders(
    images: str | os.PathLike,
    predictions: str | os.PathLike,
    references: str | os.PathLike,
    output: str | os.PathLike,
    run_dir: str | os.PathLike | None = None,
    class_names: Mapping[int, str] | None = None,
    nsd_tolerance: float = 2.0,
) -> tuple[Path, dict]:
    """``masam report``: evaluate ``predictions`` against ``references`` and write the HTML page
    (metrics, box plots, the run's curves, overlays of every case). Returns (page, results)."""
    from .evaluate import evaluate_folders

    classes = sorted(class_names) if class_names else None
    results = evaluate_folders(predictions, references, classes, class_names, nsd_tolerance=nsd_tolerance)
    try:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{output}: cannot create its folder: {err.strerror}") from None
    try:
        cases = find_report_cases(images, predictions, references)
        return write_report(output, results, cases, run_dir, class_names), results
    except ReportError as err:
        raise InputError(str(err)) from None
