"""Settings of ``masam evaluate``."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.config import merge_labels_setting
from ..options import setting


@dataclass
class EvaluateConfig:
    pred: str = setting(help="folder of predicted label maps", group="files", short="-p")
    ref: str = setting(help="folder of reference label maps (same case names)", group="files", short="-r")
    output: str = setting(
        "metrics.json", "JSON output; a CSV is written beside it", "files", short="-o",
        default_text="metrics.json in the current folder",
    )  # fmt: skip
    dataset_json: str | None = setting(
        None, "dataset.json, for class names and the list of classes", "files",
        default_text="the names masam predict stored beside the predictions",
    )  # fmt: skip
    merge_labels: str | None = merge_labels_setting("files")  # issue 12
    nsd_tolerance: float = setting(2.0, "surface Dice tolerance in mm", "metrics")
    # issue 24: the original scores prostate on volumes resized to 512² at preprocessing
    at_size: int | None = setting(
        None, "also score with every slice of both label maps resized to N x N (nearest), as the original scores "
        "prostate at 512", "metrics", metavar="N", default_text="native size only",
    )  # fmt: skip


@dataclass
class ReportConfig:
    """``masam report``: one self-contained HTML page (issue 16)."""

    images: str = setting(help="folder of the images (CASE_0000.nii.gz)", group="files", short="-i")
    pred: str = setting(help="folder of predicted label maps", group="files", short="-p")
    ref: str = setting(help="folder of reference label maps (same case names)", group="files", short="-r")
    run: str | None = setting(None, "a training run folder whose progress.png is shown", "files")
    output: str = setting("report.html", "HTML file to write", "files", short="-o")
    dataset_json: str | None = setting(
        None, "dataset.json, for class names and the list of classes", "files",
        default_text="the names stored in the --run's model or beside the predictions",
    )  # fmt: skip
    nsd_tolerance: float = setting(2.0, "surface Dice tolerance in mm", "metrics")
