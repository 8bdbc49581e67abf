"""``masam export --format monai-bundle``: the model as a MONAI bundle folder, run by MONAI's bundle
runner through masam's predictor::

    NAME/configs/metadata.json     MONAI's metadata (versions, task, classes, network_data_format)
    NAME/configs/inference.json    a ConfigWorkflow: `run` predicts `input` (a file or folder) into `output_dir`
    NAME/models/                   the checked model archive, unpacked (manifest.json, folds/, sam_base...)
    NAME/docs/README.md            the model card;  NAME/docs/license.txt  the licence to fill in

Run it with ``python -m monai.bundle run --config_file NAME/configs/inference.json --bundle_root NAME
--input case.nii.gz --output_dir out``. The weights stay safetensors: MONAI's specification names a
pickled ``models/model.pt``, which masam never writes; neither ``verify_metadata`` nor the runner
needs it, and ``models/`` is also a model folder that ``masam predict -m NAME/models`` reads.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from .._version import __version__
from ..errors import InputError
from .archive import atomic_folder, extract_archive
from .card import FILL, model_card
from .config import ExportConfig
from .export import export_archive

# The schema MONAI's verify_metadata downloads for this metadata layout (model-zoo bundles name it).
META_SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"


class BundlePredictor:
    """What ``inference.json`` instantiates: the bundle's model, loaded once, predicting files.

    ``bundle_root``: the bundle folder; ``sam_checkpoint``: SAM's file for a model that references it
    (None: the included base, or none needed); ``precision``: as ``masam predict --precision``."""

    def __init__(self, bundle_root: str, device: str = "cpu", sam_checkpoint: str | None = None,
                 precision: str = "auto", batch_size: int = 2) -> None:  # fmt: skip
        self.models = Path(bundle_root) / "models"
        self.options = {"device": device, "precision": precision, "batch_size": batch_size}
        self.sam_checkpoint = sam_checkpoint

    def __call__(self, input: str, output_dir: str) -> list[str]:  # noqa: A002 - the bundle's key
        """Predict every case of ``input`` into ``output_dir``; the paths written (a case that fails raises)."""
        from ..infer.predict_files import load_predictor, predict_inputs
        from .install import resolved_models

        with resolved_models([str(self.models)], self.sam_checkpoint) as (paths, sam):
            predictor = load_predictor(paths, sam, **self.options)
            report = predict_inputs(predictor, input, output_dir)
        if report.failed:
            raise InputError("; ".join(f"{name}: {reason}" for name, reason in report.failed.items()))
        return [str(p) for p in report.written]


def inference_config() -> dict:
    """``configs/inference.json``: overridable ``bundle_root``, ``input``, ``output_dir``, ``device``."""
    return {
        "imports": ["$import masam.share.monai_bundle"],
        "bundle_root": ".",
        "input": "$@bundle_root + '/sample'",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "cpu",
        "sam_checkpoint": None,
        "predictor": {"_target_": "masam.share.monai_bundle.BundlePredictor", "bundle_root": "@bundle_root",
                      "device": "@device", "sam_checkpoint": "@sam_checkpoint"},  # fmt: skip
        "initialize": [],
        "run": ["$@predictor(@input, @output_dir)"],
        "finalize": [],
    }


def _tensor(kind: str, fmt: str, modality: str, channels: dict, dtype: str, value_range: list) -> dict:
    return {"type": kind, "format": fmt, "modality": modality, "num_channels": len(channels) if fmt != "segmentation"
            else 1, "spatial_shape": ["*", "*", "*"], "dtype": dtype, "value_range": value_range,
            "is_patch_data": False, "channel_def": channels}  # fmt: skip


def bundle_metadata(manifest: dict) -> dict:
    """``configs/metadata.json`` from the archive's manifest (MONAI's mandatory keys and more)."""
    import monai
    import numpy
    import torch

    spec, model, card = manifest.get("input") or {}, manifest["model"], manifest.get("card") or {}
    modality = {"MRI": "MR"}.get(spec.get("modality"), spec.get("modality") or "n/a")
    names = {int(v): k for k, v in (model.get("labels") or {}).items()}
    classes = {str(c): names.get(c, f"class {c}") for c in range(model["num_classes"] + 1)}
    inputs = {str(i): name for i, name in enumerate(spec.get("channels") or ["image"])}
    cv = manifest.get("cross_validation") or {}
    return {
        "schema": META_SCHEMA, "version": "0.1.0", "changelog": {"0.1.0": f"exported by masam {__version__}"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": numpy.__version__, "optional_packages_version": {"masam": __version__},
        "required_packages_version": {"masam": __version__},
        "name": manifest["name"], "task": f"3D segmentation of {', '.join(list(classes.values())[1:])} in {modality}",
        "description": f"MA-SAM {model['arch']} (FacT rank {model['fact_rank']}, stacks of {model['slices']} slices) "
                       f"exported by masam; {len(manifest['folds'])} fold(s) ensembled",
        "authors": FILL, "copyright": FILL, "intended_use": card.get("intended_use") or FILL,
        "data_source": card.get("training_data") or (manifest.get("dataset") or {}).get("name") or FILL,
        "data_type": "nifti", "label_classes": json.dumps(classes),
        "eval_metrics": {f"cross_validation_dice_{k}": v for k, v in (cv.get("mean") or {}).items()},
        "network_data_format": {
            "inputs": {"image": _tensor("image", "hounsfield" if modality == "CT" else "magnitude", modality,
                                        inputs, "float32", [])},
            "outputs": {"pred": _tensor("image", "segmentation", modality, classes, "uint8",
                                        [0, model["num_classes"]])},
        },
    }  # fmt: skip


def export_bundle(config: ExportConfig) -> Path:
    """Write the bundle folder ``config.output`` (whole or not at all)."""
    output = Path(config.output)
    if output.exists():
        raise InputError(f"{output}: already exists; the bundle is written into a new folder")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="masam-bundle-") as scratch, atomic_folder(output) as tmp:
        archive = Path(scratch) / "model.zip"
        _, manifest = export_archive(_with_output(config, archive))
        extract_archive(archive, tmp / "models")
        (tmp / "configs").mkdir()
        (tmp / "configs" / "metadata.json").write_text(json.dumps(bundle_metadata(manifest), indent=1))
        (tmp / "configs" / "inference.json").write_text(json.dumps(inference_config(), indent=1))
        (tmp / "docs").mkdir()
        (tmp / "docs" / "README.md").write_text(model_card(manifest))
        licence = (manifest.get("card") or {}).get("license") or FILL
        (tmp / "docs" / "license.txt").write_text(f"Model licence: {licence}\nSAM's weights: Apache-2.0\n")
    return output


def _with_output(config: ExportConfig, output: os.PathLike) -> ExportConfig:
    import dataclasses

    return dataclasses.replace(config, output=str(output), format="zip")
