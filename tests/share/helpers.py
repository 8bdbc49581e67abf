"""Run folders as ``masam train`` leaves them, built in seconds from tiny randomised models: weights,
``config.json``, ``log.jsonl``, ``progress.png``, ``postprocessing.json``, ``validation/`` and the
cache's ``CASE.json``; and a dataset beside them (issue 26's tests)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import numpy as np
import torch

import masam
from masam.data import Normalization
from masam.infer.postprocess import write_postprocessing
from masam.model.checkpoint import save_weights
from masam.spec import InputSpec
from tests.conftest import official_sam_state
from tests.data.helpers import make_dataset, phantom, write_volume

LABELS = {"background": 0, "organ_a": 1, "organ_b": 2}


def tiny_model(seed: int, sam: Path | None = None, decoder_spread: float = 0.5):
    """vit_tiny at 64², 2 classes, every trainable tensor random (the frozen SAM base kept): spread
    0.05, the mask decoder's ``decoder_spread``. A wide decoder makes the test image's label map hold every class
    (with 0.05 throughout it is background only), so that comparisons of label maps compare something."""
    options = {"label_names": LABELS}
    if sam is None:
        model = masam.load_model(arch="vit_tiny", num_classes=2, image_size=64, rank=4, model_options=options)
    else:
        model = masam.load_model(sam, num_classes=2, image_size=64, rank=4, model_options=options)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                norm = "norm" in name and p.ndim == 1 and name.endswith("weight")
                spread = decoder_spread if name.startswith("mask_decoder.") else 0.05
                p.copy_(torch.randn(p.shape, generator=gen) * spread + (1.0 if norm else 0.0))
    norm = Normalization("CT").to_dict()
    model.input_spec = InputSpec("CT", ("CT",), (norm,), 5, 64, intensity={"mean": 0.3, "std": 0.2,
                                 "case_mean_min": 0.25, "case_mean_max": 0.35})  # fmt: skip
    return model.eval()


def make_sam(folder: Path) -> Path:
    """A tiny SAM checkpoint in the official layout (random values)."""
    path = folder / "sam_vit_tiny.pth"
    torch.save(official_sam_state("vit_tiny", 64, seed=3), path)
    return path


def make_run(run: Path, dataset: Path, fold: int, sam: Path | None = None, predict_with: str = "best") -> Path:
    """One fold run of a tiny model on ``dataset``: the files masam train writes, and the fold's
    validation prediction (case ``fold``, the model's own labels so that Dice is known: 1.0)."""
    run.mkdir(parents=True)
    model = tiny_model(fold, sam)
    save_weights(model, run / f"model_{predict_with}.safetensors")
    train = {"dataset": str(dataset), "fold": str(fold), "num_folds": 2, "sam_checkpoint": str(sam) if sam else None,
             "lr": 1e-3, "iterations": 12, "batch_size": 4, "predict_with": predict_with, "output": str(run),
             "device": "cpu", "workers": 0}  # fmt: skip
    (run / "config.json").write_text(json.dumps({"train": train, "model": model.config.to_dict()}))
    (run / "log.jsonl").write_text(json.dumps({"step": 12, "val_dice": 0.5, "val_dice_organ_a": 0.75,
                                               "val_dice_organ_b": 0.25}) + "\n")  # fmt: skip
    matplotlib.image.imsave(run / "progress.png", np.zeros((4, 4, 3)), format="png")
    write_postprocessing(run / "postprocessing.json", {1: True, 2: False})
    (run / "cache").mkdir()
    (run / "cache" / "case00.json").write_text(json.dumps({"spacing": [1.0, 1.0, 3.0 + fold]}))
    (run / "validation").mkdir()
    label = dataset / "labelsTr" / f"case{fold:02d}.nii.gz"
    (run / "validation" / f"case{fold:02d}.nii.gz").write_bytes(label.read_bytes())
    return run


def make_runs(root: Path, sam: Path | None = None) -> tuple[Path, Path]:
    """``root/dataset`` (2 training cases, 1 test image) and ``root/runs/fold_0``, ``fold_1``."""
    dataset = make_dataset(root / "dataset", cases=2, shape=(8, 40, 48))
    (dataset / "imagesTs").mkdir()
    image, _ = phantom((8, 40, 48), seed=7)
    write_volume(dataset / "imagesTs" / "test00_0000.nii.gz", image, (1.0, 1.0, 3.0))
    for fold in (0, 1):
        make_run(root / "runs" / f"fold_{fold}", dataset, fold, sam)
    return root / "runs", dataset
