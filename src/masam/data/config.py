"""Settings of reading and normalising data (``masam preprocess``; shared with ``masam train``).

The shared fields are made by functions, so that each command's dataclass gets its own field with
the one declaration of its default and help."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import setting
from ..spec import IMAGE_SIZE


def modality_setting():
    return setting(
        None, "CT, MRI (or an MR sequence name such as T2) or RGB", "data", default_text="dataset.json's channel name"
    )


def ct_window_setting():
    return setting(
        (-200.0, 250.0), "CT intensity window in HU (the paper's abdomen window)", "data", metavar=("LOW", "HIGH")
    )


def mri_percentile_setting():
    return setting(99.0, "MRI upper clip percentile (per volume), with --mri-rule percentile", "data")


def mri_rule_setting():
    # issue 27: measured on the shared BraTS cases (docs/learning.md); the paper presets keep the original's
    return setting(
        "robust", "MRI normalisation: robust (the foreground's median and IQR, masam's) or percentile "
        "([min, --mri-percentile] of the volume, the original's)", "data", choices=("robust", "percentile"),
    )  # fmt: skip


def merge_labels_setting(group: str = "data"):
    return setting(
        None, "label values merged when labels are read, FROM:TO[,FROM:TO] (BTCV: 13:12)", group, metavar="MAP"
    )


PREPARE_DATASETS = ("btcv", "prostate", "endovis", "pancreas")


@dataclass
class PrepareConfig:
    """``masam prepare``: a public raw layout of the paper's data -> masam's dataset layout (issue 12)."""

    dataset: str = setting(help="which raw layout", group="files", choices=PREPARE_DATASETS, positional=True)
    source: str = setting(help="the raw download's folder", group="files", metavar="SRC", positional=True)
    destination: str = setting(help="the dataset folder to write", group="files", metavar="DST", positional=True)
    merge_labels: str | None = setting(
        None, "label values merged, FROM:TO[,FROM:TO] (btcv only)", "files", metavar="MAP",
        default_text="btcv: 13:12 as the original",
    )  # fmt: skip
    site: tuple[str, ...] = setting(
        (), "prostate: site folder names and their letters, FOLDER=LETTER ...", "files", metavar="FOLDER=LETTER",
        default_text="the known site names",
    )  # fmt: skip


@dataclass
class PreprocessConfig:
    """``masam preprocess``: read, normalise and resize a dataset once into a cache folder."""

    dataset: str = setting(help="dataset folder in the nnU-Net raw layout", group="data", short="-d")
    output: str = setting(help="cache folder to write", group="data", short="-o")
    image_size: int = setting(IMAGE_SIZE, "model input size, a multiple of 16 (the model's)", "data")
    modality: str | None = modality_setting()
    ct_window: tuple[float, float] = ct_window_setting()
    mri_percentile: float = mri_percentile_setting()
    mri_rule: str = mri_rule_setting()
    merge_labels: str | None = merge_labels_setting()  # issue 12
    # issue 17: parallel preprocessing
    processes: int = setting(1, "cases preprocessed at once, each in a process", "data")


@dataclass
class CheckConfig:
    """``masam check`` (issue 15): every problem of a dataset in one report."""

    dataset: str = setting(help="dataset folder in the nnU-Net raw layout", group="data", short="-d")
    processes: int = setting(2, "worker processes reading cases (1: read in this process)", "data")
