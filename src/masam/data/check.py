"""Dataset integrity check (nnU-Net's ``verify_dataset_integrity``, and more): every case is read once,
in parallel, and every problem is collected into one table instead of stopping at the first.

Layouts: nnU-Net v2 raw (``imagesTr/CASE_0000{ending}``, ``CASE_0001``... one file per channel named in
``channel_names``; ``labelsTr/CASE{ending}``), masam's video layout (``imagesTr/SEQ/`` frame folders,
``labelsTr/SEQ/``) and DICOM series folders as cases (``imagesTr/CASE/`` holding one series,
``labelsTr/CASE{ending}``). Does not use ``load_dataset``, so it also checks datasets that the
current loader would refuse (several channels).
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .io import FRAME_SUFFIXES, VOLUME_SUFFIXES, ImageReadError, Volume, has_suffix, list_frames, read_frames
from .io import read_volume as _read_volume

SPACING_OUTLIER = 3.0
"""A case's spacing on an axis more than this factor away from the dataset's median is reported."""


@dataclass(frozen=True)
class Problem:
    """One row of the report. ``severity``: "error" (the dataset is not usable as it is) or
    "warning" (usable, but probably not what was meant)."""

    case: str
    file: str
    problem: str
    severity: str = "error"


@dataclass
class CaseTask:
    """What one worker reads: channel index -> image path (a file, frame folder or DICOM folder)."""

    name: str
    images: dict[int, Path]
    label: Path | None
    declared: tuple[int, ...]
    video: bool = False


@dataclass
class CaseResult:
    """What one worker found. ``ranges``: channel -> (min, 1st percentile, 99th percentile, max)."""

    name: str
    problems: list[Problem] = field(default_factory=list)
    shape: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None
    ranges: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    class_counts: dict[int, int] = field(default_factory=dict)


@dataclass
class CheckReport:
    """All problems of a dataset and a summary of what was read."""

    root: Path
    problems: list[Problem]
    results: list[CaseResult]
    channels: dict[int, str]
    labels: dict[str, int]

    @property
    def ok(self) -> bool:
        """The dataset is usable: no problem of severity "error"."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def class_voxels(self) -> dict[str, int]:
        """Voxels of each declared class over all labels read."""
        total = {name: 0 for name in self.labels}
        by_value = {v: n for n, v in self.labels.items()}
        for result in self.results:
            for value, count in result.class_counts.items():
                if value in by_value:
                    total[by_value[value]] += count
        return total


def check_dataset(root: str | os.PathLike, processes: int = 2) -> CheckReport:
    """Check the dataset at ``root``: read every case once (``processes`` worker processes; 1 reads
    in this process) and collect every problem. Never raises for a faulty dataset."""
    root = Path(root)
    meta = _read_meta(root)
    if isinstance(meta, Problem):
        return CheckReport(root, [meta], [], {}, {})
    channels, labels, ending = meta
    tasks, problems = _tasks(root, channels, labels, ending)
    results = _run(tasks, processes)
    problems += [p for result in results for p in result.problems]
    training = [r for r, t in zip(results, tasks, strict=True) if t.label is not None]
    problems += _dataset_problems(root, training, results, labels)
    return CheckReport(root, problems, results, channels, labels)


def _read_meta(root: Path) -> tuple[dict[int, str], dict[str, int], str] | Problem:
    """``channel_names`` (index -> name), ``labels`` and ``file_ending`` of dataset.json, or the problem."""
    path = root / "dataset.json"
    if not root.is_dir():
        return Problem("-", str(root), "no such dataset folder")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        return Problem("-", str(path), "missing (every dataset needs a dataset.json, as in nnU-Net)")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return Problem("-", str(path), f"not valid JSON: {err}")
    if not isinstance(meta, dict) or any(k not in meta for k in ("channel_names", "labels", "file_ending")):
        return Problem("-", str(path), "needs the keys channel_names, labels and file_ending")
    names, labels, ending = meta["channel_names"], meta["labels"], str(meta["file_ending"])
    if not isinstance(names, dict) or sorted(names) != [str(i) for i in range(len(names))] or not names:
        return Problem("-", str(path), f"channel_names must be keyed 0, 1, ... without gaps, got {names!r}")
    if not isinstance(labels, dict) or not all(isinstance(v, int) and v >= 0 for v in labels.values()):
        return Problem("-", str(path), "labels must map names to non-negative integers (no region labels)")
    if 0 not in labels.values() or len(labels) < 2:
        return Problem("-", str(path), "labels need a background (0) and at least one class")
    if not has_suffix(ending, VOLUME_SUFFIXES + FRAME_SUFFIXES):
        return Problem("-", str(path), f"unsupported file_ending {ending!r}")
    return {int(k): str(v) for k, v in names.items()}, {str(k): int(v) for k, v in labels.items()}, ending


def _tasks(
    root: Path, channels: dict[int, str], labels: dict[str, int], ending: str
) -> tuple[list[CaseTask], list[Problem]]:
    """One task per case of imagesTr (with its label) and imagesTs, and the layout's problems."""
    declared = tuple(sorted(set(labels.values())))
    tasks, problems = [], []
    for split in ("imagesTr", "imagesTs"):
        cases, found = _image_entries(root / split, ending, channels)
        problems += found
        for name, (images, video) in cases.items():
            label = None
            if split == "imagesTr":
                label = root / "labelsTr" / (name if video else name + ending)
                if not label.exists():
                    problems.append(Problem(name, str(label), "missing label for a training case"))
                    label = None
            tasks.append(CaseTask(name, images, label, declared, video))
        if split == "imagesTr" and not cases:
            problems.append(Problem("-", str(root / split), f"no training images (CASE_0000{ending} files or folders)"))
    problems += _orphan_labels(root, ending, {t.name for t in tasks})
    return tasks, problems


def _image_entries(
    folder: Path, ending: str, channels: dict[int, str]
) -> tuple[dict[str, tuple[dict[int, Path], bool]], list[Problem]]:
    """Cases of one images folder: name -> (channel -> path, is video), and naming problems."""
    from .dicom import is_dicom_folder

    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending) + "$")
    cases: dict[str, tuple[dict[int, Path], bool]] = {}
    problems = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        match = pattern.match(entry.name)
        if entry.name.startswith("."):
            continue
        if match:  # a folder with such a name is reported by the worker ("is a folder")
            cases.setdefault(match["case"], ({}, False))[0][int(match["channel"])] = entry
        elif entry.is_dir() and (list_frames(entry) or is_dicom_folder(entry)):
            cases[entry.name] = ({0: entry}, bool(list_frames(entry)))
        elif entry.is_dir():
            problems.append(Problem(entry.name, str(entry), "is a folder with neither frames nor DICOM images"))
        else:
            problems.append(Problem("-", str(entry), f"not named CASE_XXXX{ending}; ignored", "warning"))
    for name, (images, _) in cases.items():
        for channel in sorted(set(channels) - set(images)):
            expected = folder / f"{name}_{channel:04d}{ending}"
            problems.append(Problem(name, str(expected), f"missing channel {channel:04d} ({channels[channel]})"))
        for extra in sorted(set(images) - set(channels)):
            problems.append(Problem(name, str(images[extra]), f"channel {extra:04d} is not in channel_names"))
    return cases, problems


def _orphan_labels(root: Path, ending: str, cases: set[str]) -> list[Problem]:
    folder = root / "labelsTr"
    orphans = []
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        name = entry.name[: -len(ending)] if entry.name.endswith(ending) else entry.name
        if not entry.name.startswith(".") and name not in cases:
            orphans.append(Problem(name, str(entry), "a label without an image in imagesTr", "warning"))
    return orphans


def _run(tasks: list[CaseTask], processes: int) -> list[CaseResult]:
    """Check the cases, in worker processes when ``processes`` > 1; results in task order."""
    if processes <= 1 or len(tasks) <= 1:
        return [_check_case(task) for task in tasks]
    with ProcessPoolExecutor(max_workers=min(processes, len(tasks)), initializer=_one_itk_thread) as pool:
        return list(pool.map(_check_case, tasks, chunksize=1))


def _one_itk_thread() -> None:
    # the parallelism is across cases; ITK threads on top would oversubscribe the cores
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _check_case(task: CaseTask) -> CaseResult:
    """Read every channel and the label of one case once and record what is wrong."""
    result = CaseResult(task.name)
    try:
        volumes = {c: v for c, v in ((c, _read(task.images[c], task, result)) for c in sorted(task.images)) if v}
        reference = volumes.get(0)
        if reference is not None:
            result.shape, result.spacing = reference.array.shape, tuple(reference.spacing)
        for channel, volume in volumes.items():
            result.ranges[channel] = _intensity_range(volume.array)
            difference = _difference(volume, reference) if channel and reference is not None else None
            if difference:
                message = f"channel {channel:04d}: {difference} channel 0000"
                result.problems.append(Problem(task.name, str(volume.path), message))
        if task.label is not None:
            _check_label(task, reference, result)
    except Exception as err:  # noqa: BLE001 - one broken case must not hide the others' problems
        result.problems.append(Problem(task.name, str(task.images.get(0, "")), f"could not be checked: {err!r}"))
    return result


def _read(path: Path, task: CaseTask, result: CaseResult, label: bool = False) -> Volume | None:
    """The image or label at ``path``, or None with the problem recorded."""
    if path.is_dir() and has_suffix(path.name, VOLUME_SUFFIXES):
        result.problems.append(Problem(task.name, str(path), "is a folder, named like an image file"))
        return None
    try:
        return read_frames(path, label=True) if label and task.video else _read_volume(path)
    except ImageReadError as err:
        message = str(err)
        message = message[len(f"{path}: ") :] if message.startswith(f"{path}: ") else message
        result.problems.append(Problem(task.name, str(path), message))
        return None


def _difference(volume: Volume, reference: Volume) -> str | None:
    """How ``volume``'s grid differs from ``reference``'s (shape, spacing, origin, direction), or None."""
    if volume.array.shape[:3] != reference.array.shape[:3]:  # (x, y, z), as the summary (issue 28)
        mine, theirs = list(volume.array.shape[:3][::-1]), list(reference.array.shape[:3][::-1])
        return f"size (x, y, z) {mine} differs from the size {theirs} of"
    if volume.is_video or volume.same_geometry(reference):
        return None
    for what in ("spacing", "origin", "direction"):
        mine, theirs = np.round(getattr(volume, what), 4).tolist(), np.round(getattr(reference, what), 4).tolist()
        if mine != theirs:
            return f"{what} {mine} differs from the {what} {theirs} of"
    return "geometry differs from that of"


def _check_label(task: CaseTask, reference: Volume | None, result: CaseResult) -> None:
    label = _read(task.label, task, result, label=True)
    if label is None:
        return
    array, where = label.array, str(task.label)
    if array.dtype.kind == "f":
        fractional = array[np.mod(array, 1) != 0]
        if fractional.size:
            result.problems.append(Problem(task.name, where, f"label values are not integers (e.g. {fractional[0]:g})"))
        array = np.round(array)
    values, counts = _value_counts(array)
    result.class_counts = {int(v): int(c) for v, c in zip(values, counts, strict=True)}
    undeclared = sorted(set(values.tolist()) - set(task.declared))
    if undeclared:
        result.problems.append(Problem(task.name, where, f"label values {undeclared} are not declared in dataset.json"))
    if reference is not None:
        difference = _difference(label, reference)
        if difference:
            result.problems.append(Problem(task.name, where, f"label {difference} the image"))
    if not (values != 0).any():
        result.problems.append(Problem(task.name, where, "empty label (background only)", "warning"))


def _value_counts(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values present and their voxel counts (bincount: much faster than sorting for labels)."""
    flat = array.reshape(-1).astype(np.int64, copy=False)
    low, high = int(flat.min()), int(flat.max())
    if low < 0 or high > 100_000:
        return np.unique(flat, return_counts=True)
    counts = np.bincount(flat)
    values = np.flatnonzero(counts)
    return values, counts[values]


def _intensity_range(array: np.ndarray) -> tuple[float, float, float, float]:
    """(min, 1st percentile, 99th percentile, max); percentiles of at most ~1M evenly strided voxels."""
    flat = array.reshape(-1)
    sample = flat[:: max(1, flat.size // 1_000_000)]
    low, high = np.percentile(sample, [1, 99])
    return float(flat.min()), float(low), float(high), float(flat.max())


def _dataset_problems(
    root: Path, training: list[CaseResult], results: list[CaseResult], labels: dict[str, int]
) -> list[Problem]:
    """Problems seen only across cases: classes that occur in no label, spacing outliers."""
    problems = []
    seen = {v for r in training for v, n in r.class_counts.items() if n}
    for name, value in sorted(labels.items(), key=lambda kv: kv[1]):
        if value and training and value not in seen:
            message = f"class {name} ({value}) occurs in no label"
            problems.append(Problem("-", str(root / "dataset.json"), message, "warning"))
    spaced = [r for r in results if r.spacing is not None and len(r.spacing) == 3]
    if len(spaced) >= 3:
        median = np.median([r.spacing for r in spaced], axis=0)
        for r in spaced:
            ratio = np.asarray(r.spacing) / median
            if (ratio > SPACING_OUTLIER).any() or (ratio < 1 / SPACING_OUTLIER).any():
                message = f"spacing {_fmt(r.spacing)} is far from the dataset's median {_fmt(median)}"
                problems.append(Problem(r.name, "-", message, "warning"))
    return problems


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in values) + ")"


def format_report(report: CheckReport) -> str:
    """The problem table (case, severity, file relative to the dataset, problem) and a summary."""
    errors = sum(p.severity == "error" for p in report.problems)
    lines = [f"Dataset {report.root}: {len(report.results)} cases checked"]
    if report.problems:
        lines.append(f"{errors} error(s), {len(report.problems) - errors} warning(s):")
        rows = [("case", "severity", "file", "problem")] + [
            (p.case, p.severity, _relative(p.file, report.root), p.problem) for p in report.problems
        ]
        widths = [min(40, max(len(row[i]) for row in rows)) for i in range(3)]
        for row in rows:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths + [0], strict=True)).rstrip())
    else:
        lines.append("no problems found")
    lines += _summary(report)
    lines.append("usable" if report.ok else "NOT usable: fix the errors above")
    return "\n".join(lines)


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def _summary(report: CheckReport) -> list[str]:
    """Cases, spacings, sizes (x, y, z), intensity ranges per channel and class voxel counts."""
    read = [r for r in report.results if r.shape is not None]
    if not read:
        return []
    lines = [f"summary over {len(read)} readable cases:"]
    spacings = np.asarray([r.spacing for r in read], dtype=float)
    sizes = np.asarray([r.shape[:3][::-1] for r in read], dtype=float)
    for what, values in (("spacing (x, y, z)", spacings), ("size (x, y, z)", sizes)):
        lows, mids, highs = values.min(axis=0), np.median(values, axis=0), values.max(axis=0)
        lines.append(f"  {what}: median {_fmt(mids)}, min {_fmt(lows)}, max {_fmt(highs)}")
    for channel, name in report.channels.items():
        ranges = np.asarray([r.ranges[channel] for r in report.results if channel in r.ranges])
        if ranges.size:
            lines.append(
                f"  intensity {channel:04d} ({name}): min {ranges[:, 0].min():.4g}, median 1st-99th percentile "
                f"{np.median(ranges[:, 1]):.4g} to {np.median(ranges[:, 2]):.4g}, max {ranges[:, 3].max():.4g}"
            )
    counts = ", ".join(f"{name} {count}" for name, count in report.class_voxels.items())
    lines.append(f"  class voxels: {counts}")
    return lines
