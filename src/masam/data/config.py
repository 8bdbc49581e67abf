"""Settings of reading and normalising data (``masam preprocess``; shared with ``masam train``).

The shared fields are made by functions, so that each command's dataclass gets its own field with
the one declaration of its default and help."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import setting


def modality_setting():
    return setting(
        None, "CT, MRI (or an MR sequence name such as T2) or RGB", "data", default_text="dataset.json's channel name"
    )


def ct_window_setting():
    return setting(
        (-200.0, 250.0), "CT intensity window in HU (the paper's abdomen window)", "data", metavar=("LOW", "HIGH")
    )


def mri_percentile_setting():
    return setting(99.0, "MRI upper clip percentile (per volume)", "data")


def image_size_setting(group: str = "model"):
    return setting(512, "model input size, a multiple of 16", group)


@dataclass
class PreprocessConfig:
    """``masam preprocess``: read, normalise and resize a dataset once into a cache folder."""

    dataset: str = setting(help="dataset folder in the nnU-Net raw layout", group="data", short="-d")
    output: str = setting(help="cache folder to write", group="data", short="-o")
    image_size: int = image_size_setting("data")
    modality: str | None = modality_setting()
    ct_window: tuple[float, float] = ct_window_setting()
    mri_percentile: float = mri_percentile_setting()


@dataclass
class CheckConfig:
    """``masam check`` (issue 15): every problem of a dataset in one report."""

    dataset: str = setting(help="dataset folder in the nnU-Net raw layout", group="data", short="-d")
    processes: int = setting(2, "worker processes reading cases (1: read in this process)", "data")
