"""Issue 18 measurement: ``masam train --arch vit_tiny --preset scratch`` on the shared TotalSegmentator CT.

The one CT volume (example_ct, 122x101x112 at 3 mm, TotalSegmentator v1 labels) is cut into 8 slabs
of 14 slices along z; liver, spleen and kidneys (left and right as one class) are kept. Slab 6 (amid
the organs) is held out for validation (a split file), the other 7 train. Prints the held-out Dice per class and
the wall time. Usage::

    PYTHONPATH=src python benchmarks/scratch_preset.py OUT [--iterations 300] [--image-size 96]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from results_file import write_result

from masam.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "totalsegmentator"
CLASSES = {"spleen": (1,), "kidney": (2, 3), "liver": (5,)}
SLAB, VAL = 14, (6,)


def write_dataset(root: Path) -> Path:
    image = sitk.ReadImage(str(SHARED / "example_ct.nii.gz"))
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(SHARED / "v1_commit_0effae9d" / "example_seg.nii.gz")))
    label = np.zeros(seg.shape, np.uint8)
    for value, codes in enumerate(CLASSES.values(), start=1):
        label[np.isin(seg, codes)] = value
    array = sitk.GetArrayFromImage(image).astype(np.int16)
    for folder in ("imagesTr", "labelsTr"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(array.shape[0] // SLAB):
        z = slice(k * SLAB, (k + 1) * SLAB)
        for data, path in ((array[z], f"imagesTr/slab{k}_0000.nii.gz"), (label[z], f"labelsTr/slab{k}.nii.gz")):
            itk = sitk.GetImageFromArray(data)
            itk.SetSpacing(image.GetSpacing())
            sitk.WriteImage(itk, str(root / path), useCompression=True)
        names.append(f"slab{k}")
        print(f"slab{k}: classes present {sorted(set(np.unique(label[z]).tolist()) - {0})}")
    labels = {"background": 0, **{name: v for v, name in enumerate(CLASSES, start=1)}}
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz", "numTraining": len(names)}
    (root / "dataset.json").write_text(json.dumps(meta))
    split = {"train": [n for k, n in enumerate(names) if k not in VAL], "val": [names[k] for k in VAL]}
    (root / "split.json").write_text(json.dumps(split))
    return root


def run() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "scratch_preset.json"))
    args = parser.parse_args()
    out = Path(args.out)
    dataset = write_dataset(out / "dataset")
    started = time.time()
    code = main([
        "train", "-d", str(dataset), "-o", str(out / "run"), "--arch", "vit_tiny", "--preset", "scratch",
        "--image-size", str(args.image_size), "--iterations", str(args.iterations), "--val-every", "2",
        "--split-file", str(dataset / "split.json"), "--workers", "1", "--quiet",
    ])  # fmt: skip
    seconds = time.time() - started
    print(f"exit {code}; wall time {seconds:.0f} s")
    records = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines() if line.strip()]
    validations = [r for r in records if any(k.startswith("val_dice_") for k in r)]
    last = {k[len("val_dice_"):]: v for k, v in validations[-1].items() if k.startswith("val_dice_")}
    write_result(args.json, {
        "command": f"masam train --arch vit_tiny --preset scratch --image-size {args.image_size} "
        f"--iterations {args.iterations}", "held_out": [f"slab{k}" for k in VAL], "exit": code,
        "wall_seconds": round(seconds, 1), "held_out_dice_last_validation": last,
        "validations": len(validations), "load_average_1min_at_end": os.getloadavg()[0],
    })  # fmt: skip


if __name__ == "__main__":
    run()
