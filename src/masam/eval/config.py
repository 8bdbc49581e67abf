"""Settings of ``masam evaluate``."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.config import merge_labels_setting
from ..options import setting


@dataclass
class EvaluateConfig:
    pred: str = setting(help="folder of predicted label maps", group="files", short="-p")
    ref: str = setting(help="folder of reference label maps (same case names)", group="files", short="-r")
    output: str = setting("metrics.json", "JSON output; a CSV is written beside it", "files", short="-o")
    dataset_json: str | None = setting(None, "dataset.json, for class names and the list of classes", "files")
    merge_labels: str | None = merge_labels_setting("files")  # issue 12
    nsd_tolerance: float = setting(2.0, "surface Dice tolerance in mm", "metrics")
