"""Settings of ``masam export`` and ``masam install``."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import setting

EXPORT_FORMATS = ("zip", "monai-bundle", "onnx")


@dataclass
class ExportConfig:
    run: str = setting(help="a run folder, or a folder of fold runs (fold_0 ... fold_4)", group="files",
                       positional=True)  # fmt: skip
    output: str | None = setting(
        None, "the archive to write (model.zip), or the bundle's folder with --format monai-bundle", "files",
        short="-o", default_text="required unless --card-only",
    )  # fmt: skip
    format: str = setting(
        "zip", "zip: masam's model archive; monai-bundle: a MONAI bundle folder; onnx: the archive with each "
        "fold's encoder and decoder as ONNX graphs (masam predict --engine onnxruntime)", "files",
        choices=EXPORT_FORMATS,
    )  # fmt: skip
    folds: tuple[str, ...] = setting(
        (), "export these folds only (run folder names or fold numbers)", "files", default_text="every fold"
    )
    sam_weights: str = setting(
        "reference", "reference: name SAM's checkpoint by its fingerprint (the user gives the file); include: "
        "put SAM's frozen tensors in the archive (self-contained, no SAM file needed)", "files",
        choices=("reference", "include"),
    )  # fmt: skip
    sam_checkpoint: str | None = setting(
        None, "the SAM checkpoint to include", "files", default_text="the one the run was trained with"
    )
    card_only: bool = setting(False, "print the model card and write nothing", "files")
    name: str | None = setting(None, "the model's name (masam predict -m NAME once installed)", "model card",
                               default_text="the run folder's name")  # fmt: skip
    intended_use: str | None = setting(None, "what the model is for, e.g. 'liver and kidneys on adult "
                                       "abdominal CT, research use'", "model card")  # fmt: skip
    training_data: str | None = setting(None, "where the training images come from (added to dataset.json's "
                                        "description)", "model card")  # fmt: skip
    limits: tuple[str, ...] = setting((), "known limits, one sentence each (e.g. 'not validated for "
                                             "children')", "model card")  # fmt: skip
    license: str | None = setting(None, "the model's licence (a SPDX id or 'other')", "model card",
                                  default_text="to fill in")  # fmt: skip


@dataclass
class InstallConfig:
    archive: str = setting(help="a model archive written by masam export", group="files", positional=True)
    name: str | None = setting(None, "install under this name", "files", default_text="the archive's model name")
    models: str | None = setting(None, "the models folder", "files",
                                 default_text="$MASAM_MODELS, else ~/.masam/models")  # fmt: skip
    force: bool = setting(False, "replace an installed model of the same name", "files")
