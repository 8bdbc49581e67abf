"""Whole-volume prediction modes: time per volume and Dice against faithful mode (stride 1).

Run by hand: ``python benchmarks/volume_modes.py``. It trains two small models the project's own
way, the demo phantom model and a vit_tiny on the ../shared/data TotalSegmentator CT, then predicts
their volumes with every stride from 1 (the paper's: every slice the centre of a stack) to 5
(every slice covered by exactly one stack). Writes ``benchmarks/results/volume_modes.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from results_file import write_result  # the sibling module in benchmarks/

from masam.allocator import configure_allocator
from masam.data import read_label, read_volume
from masam.demo import run_demo
from masam.eval import dice
from masam.infer import Predictor

ROOT = Path(__file__).resolve().parents[1]
SHARED_CT = ROOT.parent / "shared" / "data" / "totalsegmentator"


def shared_ct_model(
    work: Path, iterations: int, device: str = "cpu", folder: Path = SHARED_CT
) -> tuple[Path, list[tuple[Path, Path]]]:
    from masam.cli import main

    folder = Path(folder).resolve()

    data = work / "SharedCT"
    (data / "imagesTr").mkdir(parents=True)
    (data / "labelsTr").mkdir()
    import SimpleITK as sitk

    image = read_volume(folder / "example_ct_sm.nii.gz")
    seg = read_volume(folder / "example_seg.nii.gz").array
    organs = np.where(np.isin(seg, [1, 2, 3, 5]), seg, 0).astype(np.uint8)
    classes = {0: 0, 1: 1, 2: 2, 3: 3, 5: 4}
    organs = np.vectorize(classes.get)(organs).astype(np.uint8)
    for i in range(2):
        (data / "imagesTr" / f"ct{i}_0000.nii.gz").symlink_to(folder / "example_ct_sm.nii.gz")
        out = sitk.GetImageFromArray(organs)
        out.SetSpacing(image.spacing)
        out.SetOrigin(image.origin)
        out.SetDirection(image.direction)
        sitk.WriteImage(out, str(data / "labelsTr" / f"ct{i}.nii.gz"))
    labels = {"background": 0, "spleen": 1, "kidney_r": 2, "kidney_l": 3, "liver": 4}
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz"}
    (data / "dataset.json").write_text(json.dumps(meta))
    args = ["train", "-d", str(data), "-o", str(work / "ct_run"), "--arch", "vit_tiny", "--image-size", "128"]
    args += ["--iterations", str(iterations), "--batch-size", "4", "--lr", "1e-3", "--power", "1", "--warmup", "20"]
    args += [
        "--exclude-background",
        "--no-augment",
        "--val-every",
        "0",
        "--val-fraction",
        "0",
        "--workers",
        "1",
        "--quiet",
        "--device",
        device,
    ]
    assert main(args) == 0
    return work / "ct_run", [(data / "imagesTr" / "ct0_0000.nii.gz", data / "labelsTr" / "ct0.nii.gz")]


def evaluate_modes(
    run: Path, cases: list[tuple[Path, Path]], settings: list[tuple[int, str]], device: str
) -> list[dict]:
    """Time per volume and mean foreground Dice for each (stride, precision); the first setting is
    the reference (faithful: stride 1, float32)."""
    rows = []
    first_labels: dict[Path, np.ndarray] = {}  # the reference setting's label maps
    for stride, precision in settings:
        predictor = Predictor.from_files(run, batch_size=4, stride=stride, precision=precision, device=device)
        predictor.predict(read_volume(cases[0][0]))  # warm-up
        seconds, scores, agree = 0.0, [], []
        for image, label in cases:
            volume = read_volume(image)
            start = time.perf_counter()
            result = predictor.predict(volume)
            seconds += time.perf_counter() - start
            reference = read_label(label, volume).array
            classes = [c for c in np.unique(reference) if c > 0]
            scores.append(np.mean([dice(result.labels == c, reference == c) for c in classes]))
            agree.append(float(np.mean(result.labels == first_labels.setdefault(image, result.labels))))
        rows.append(
            {
                "stride": stride,
                "precision": precision,
                "seconds_per_volume": seconds / len(cases),
                "mean_dice": float(np.mean(scores)),
                "voxels_agreeing_with_faithful_fp32": round(float(np.mean(agree)), 5),
            }
        )
    faithful = rows[0]
    for row in rows:
        row["speed_up"] = round(faithful["seconds_per_volume"] / row["seconds_per_volume"], 2)
        row["dice_minus_faithful"] = round(row["mean_dice"] - faithful["mean_dice"], 4)
        row["seconds_per_volume"] = round(row["seconds_per_volume"], 3)
        row["mean_dice"] = round(row["mean_dice"], 4)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strides", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="strides to compare")
    parser.add_argument("--demo-iterations", type=int, default=600, help="training steps of the phantom model")
    parser.add_argument("--ct-iterations", type=int, default=300, help="training steps of the shared-CT model")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--ct-folder", type=Path, default=SHARED_CT, help="folder with example_ct_sm.nii.gz and example_seg.nii.gz"
    )
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32"], help="precisions to compare, each at every stride (default fp32)"
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "volume_modes.json"))
    parser.add_argument("--note", default=None, help="a remark stored with the result (e.g. the machine was shared)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    configure_allocator("reuse")  # as masam predict
    settings = [(1, "fp32")] + [(s, p) for p in args.precisions for s in args.strides if (s, p) != (1, "fp32")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run_demo(work / "demo", iterations=args.demo_iterations, device=args.device)
        test = sorted((work / "demo" / "dataset" / "imagesTs").glob("*_0000.nii.gz"))
        demo_cases = [(p, work / "demo" / "dataset" / "labelsTs" / p.name.replace("_0000", "")) for p in test]
        result = {
            "device": args.device,
            **({"note": args.note} if args.note else {}),
            "phantom": evaluate_modes(work / "demo" / "run", demo_cases, settings, args.device),
        }
        ct_run, ct_cases = shared_ct_model(work, args.ct_iterations, args.device, args.ct_folder)
        result["shared_ct"] = evaluate_modes(ct_run, ct_cases, settings, args.device)
    write_result(args.out, result)


if __name__ == "__main__":
    main()
