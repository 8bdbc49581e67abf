"""bf16 against float32 on trained models (issue 17, goal 1): voxels that agree, and mean Dice.

Run by hand on folders of runs the project trained, e.g. the prompt benchmark's models:
``python benchmarks/precision_agreement.py --runs WORK/synthetic/no_prompt WORK/synthetic/box ...
--images WORK/synthetic/data/imagesTs --labels WORK/synthetic/data/labelsTs``. Each run predicts
every test case in float32 and in bf16, automatically where the model can and with the reference's
per-slice boxes where it was trained with boxes, in faithful mode. Writes
``benchmarks/results/precision_agreement.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from results_file import write_result  # the sibling module in benchmarks/

from masam.data import read_label, read_volume, slice_axis
from masam.eval import dice
from masam.infer import Predictor
from masam.infer.boxes import SliceBoxes
from masam.infer.predict_files import boxes_from_labels
from masam.precision import cpu_has_native_bf16


def reference_boxes(predictor: Predictor, label: np.ndarray, axis: int) -> SliceBoxes | None:
    """The per-slice boxes a box model is given (around its ``box_label``), None for a model that
    segments without a prompt."""
    if predictor.segments_unprompted:
        return None
    target = label > 0 if predictor.box_label is None else label == predictor.box_label
    return SliceBoxes({i: tuple(b) for i, b in boxes_from_labels(target.astype(np.uint8), axis).items()})


def compare(run: Path, images: Path, labels: Path, device: str) -> dict:
    """Label maps of ``run`` in float32 and bf16 on every case of ``images``: voxels equal, mean
    Dice over the foreground classes of each reference (a box model's: its boxed class), and
    seconds per case."""
    rows: dict[str, dict] = {}
    predictors = {p: Predictor.from_files(run, precision=p, device=device) for p in ("fp32", "bf16")}
    for image_path in sorted(images.glob("*_0000.nii.gz")):
        name = image_path.name[: -len("_0000.nii.gz")]
        volume = read_volume(image_path)
        reference = read_label(labels / f"{name}.nii.gz", volume).array
        boxes = reference_boxes(predictors["fp32"], reference, slice_axis(volume))
        boxed = predictors["fp32"].box_label if boxes is not None else None
        classes = [boxed] if boxed is not None else [c for c in np.unique(reference) if c > 0]
        out = {}
        for precision, predictor in predictors.items():
            start = time.perf_counter()
            result = predictor.predict(volume, boxes=boxes)
            seconds = time.perf_counter() - start
            out[precision] = (result.labels, [dice(result.labels == c, reference == c) for c in classes], seconds)
        rows[name] = {
            "voxels_equal": float(np.mean(out["fp32"][0] == out["bf16"][0])),
            **{f"mean_dice_{p}": float(np.mean(out[p][1])) for p in out},
            **{f"seconds_{p}": round(out[p][2], 3) for p in out},
        }
    equal = float(np.mean([r["voxels_equal"] for r in rows.values()]))
    dice_fp32 = float(np.mean([r["mean_dice_fp32"] for r in rows.values()]))
    dice_bf16 = float(np.mean([r["mean_dice_bf16"] for r in rows.values()]))
    summary = {"voxels_equal": round(equal, 5), "mean_dice_fp32": round(dice_fp32, 4)}
    summary.update(mean_dice_bf16=round(dice_bf16, 4), dice_difference=round(dice_bf16 - dice_fp32, 4))
    return {**summary, "cases": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run folders (masam train -o)")
    parser.add_argument("--images", type=Path, required=True, help="folder of CASE_0000.nii.gz")
    parser.add_argument("--labels", type=Path, required=True, help="folder of CASE.nii.gz references")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "precision_agreement.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"native_bf16": cpu_has_native_bf16(), "goal": "voxels_equal >= 0.995, |dice_difference| <= 0.005"}
    result["runs"] = {str(run): compare(run, args.images, args.labels, args.device) for run in args.runs}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
