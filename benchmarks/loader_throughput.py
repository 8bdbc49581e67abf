"""Training-loader throughput: stacks per second at 512² with augmentation.

Run by hand (not in the tests): ``python benchmarks/loader_throughput.py [--workers 2]``.
Writes ``benchmarks/results/loader_throughput.json``. Synthetic CT volumes are written in the
nnU-Net layout, preprocessed once, then read through the real DataLoader path.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from results_file import write_result  # the sibling module in benchmarks/
from torch.utils.data import DataLoader

from masam.data import Normalization, StackAugmenter, StackDataset, load_dataset, preprocess_dataset


def write_case(root: Path, name: str, rng: np.random.Generator, shape=(40, 256, 256)) -> None:
    image = rng.normal(0, 60, shape).astype(np.int16)
    label = (np.abs(image) > 80).astype(np.uint8)
    for array, folder, suffix in ((image, "imagesTr", "_0000"), (label, "labelsTr", "")):
        itk = sitk.GetImageFromArray(array)
        itk.SetSpacing((0.8, 0.8, 2.5))
        sitk.WriteImage(itk, str(root / folder / f"{name}{suffix}.nii.gz"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    parser.add_argument("--image-size", type=int, default=512, help="model input size (default 512)")
    parser.add_argument("--stacks", type=int, default=200, help="stacks to time after warm-up (default 200)")
    parser.add_argument("--batch-size", type=int, default=1, help="stacks per batch (default 1)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "loader_throughput.json"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "Dataset"
        (root / "imagesTr").mkdir(parents=True)
        (root / "labelsTr").mkdir()
        rng = np.random.default_rng(0)
        for i in range(3):
            write_case(root, f"case{i}", rng)
        meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "fg": 1}, "file_ending": ".nii.gz"}
        (root / "dataset.json").write_text(json.dumps(meta))
        t0 = time.perf_counter()
        cache = preprocess_dataset(load_dataset(root), Path(tmp) / "cache", args.image_size, Normalization("CT"))
        preprocess_s = time.perf_counter() - t0

        dataset = StackDataset(cache, slices=5, augment=StackAugmenter(), seed=0)
        loader = DataLoader(
            dataset,
            batch_size=args.batch_size,
            shuffle=True,
            num_workers=args.workers,
            persistent_workers=args.workers > 0,
            generator=torch.Generator().manual_seed(0),
        )
        warmup, timed, start = 10, 0, None
        while timed < args.stacks:
            for batch in loader:
                if warmup > 0:
                    warmup -= 1
                    if warmup == 0:
                        start = time.perf_counter()
                    continue
                timed += batch["image"].shape[0]
                if timed >= args.stacks:
                    break
        elapsed = time.perf_counter() - start

    result = {
        "stacks_per_s": round(timed / elapsed, 2),
        "stacks": timed,
        "seconds": round(elapsed, 2),
        "workers": args.workers,
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "slices": 5,
        "augmentation": "StackAugmenter() defaults",
        "preprocess_s_3_cases_40x256x256": round(preprocess_s, 2),
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
