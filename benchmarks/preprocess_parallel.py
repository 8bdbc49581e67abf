"""Preprocessing in parallel: seconds for a dataset of 8 synthetic CT cases with 1 and with 2 processes.

Run by hand: ``python benchmarks/preprocess_parallel.py [--rounds 2]``. Writes
``benchmarks/results/preprocess_parallel.json``. Cases are CT-like volumes (int16 HU, gzip NIfTI,
``--slices`` x 384² by default) resized to 512², so that reading, normalising and resizing are real
work. Runs alternate 1 and 2 processes (fresh caches), and the speed-up is taken per pair; the
caches of each pair are compared file for file.

The machine is shared: where a neighbour holds a core, two processes get one core's worth between
them and wall time cannot show the gain. So each run's CPU seconds are recorded too (this process
and its worker), and ``speed_up_with_free_cores`` is one process's CPU time over the larger share
of the two-process run: the wall-time ratio with both cores free, which assumes no contention for
memory bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from results_file import write_result  # the sibling module in benchmarks/

from masam.data import Normalization, load_dataset, preprocess_dataset


def synthetic_dataset(root: Path, cases: int, slices: int, size: int) -> Path:
    """``cases`` CT-like volumes with two ellipsoid organs, in the nnU-Net raw layout."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:slices, :size, :size]
    for i in range(cases):
        label = np.zeros((slices, size, size), np.uint8)
        c = rng.uniform(0.35, 0.65, 3) * (slices, size, size)
        dz, dy = ((z - c[0]) / slices) ** 2, ((y - c[1]) / size) ** 2
        label[16 * dz + 25 * dy + ((x - c[2]) / (size / 6)) ** 2 < 1] = 1
        label[36 * dz + 64 * dy + ((x - size / 4) / 20) ** 2 < 1] = 2
        image = np.where(label == 1, 60, np.where(label == 2, 150, -100)) + rng.normal(0, 20, label.shape)
        pairs = ((image.astype(np.int16), "imagesTr", f"ct{i:02d}_0000"), (label, "labelsTr", f"ct{i:02d}"))
        for array, folder, name in pairs:
            out = sitk.GetImageFromArray(array)
            out.SetSpacing((0.8, 0.8, 2.5))
            sitk.WriteImage(out, str(root / folder / f"{name}.nii.gz"))
    labels = {"background": 0, "liver": 1, "kidney": 2}
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--slices", type=int, default=100, help="slices per case (default 100)")
    parser.add_argument("--size", type=int, default=384, help="in-plane size of the cases (default 384)")
    parser.add_argument("--image-size", type=int, default=512, help="model input size (default 512)")
    parser.add_argument("--rounds", type=int, default=2, help="(1 process, 2 processes) pairs (default 2)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "preprocess_parallel.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)  # as masam preprocess in one process on this machine
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        dataset = load_dataset(synthetic_dataset(work / "D", args.cases, args.slices, args.size))
        norm = Normalization("CT")
        for r in range(args.rounds):
            seconds, cpu = {}, {}
            for processes in (1, 2):
                cache = work / f"cache{r}_{processes}"
                start, before = time.perf_counter(), os.times()
                preprocess_dataset(dataset, cache, args.image_size, norm, processes=processes)
                seconds[processes], after = time.perf_counter() - start, os.times()
                # CPU seconds of this process and of the (finished) worker
                cpu[processes] = (after.user + after.system - before.user - before.system,
                                  after.children_user + after.children_system
                                  - before.children_user - before.children_system)  # fmt: skip
            identical = _files(work / f"cache{r}_1") == _files(work / f"cache{r}_2")
            pairs.append({"seconds_1_process": round(seconds[1], 2), "seconds_2_processes": round(seconds[2], 2),
                          "speed_up": round(seconds[1] / seconds[2], 2), "caches_identical": identical,
                          "cpu_seconds_1_process": round(sum(cpu[1]), 2),
                          "cpu_seconds_2_processes_main_worker": [round(c, 2) for c in cpu[2]],
                          "speed_up_with_free_cores": round(sum(cpu[1]) / max(cpu[2]), 2)})  # fmt: skip
            print(pairs[-1], "load", os.getloadavg()[0])
    result = {
        "cases": args.cases,
        "case_shape": [args.slices, args.size, args.size],
        "image_size": args.image_size,
        "goal_speed_up": 1.8,
        "speed_up_median": statistics.median(p["speed_up"] for p in pairs),
        "speed_up_with_free_cores_median": statistics.median(p["speed_up_with_free_cores"] for p in pairs),
        "load_average_1min_at_end": os.getloadavg()[0],
        "caches_identical": all(p["caches_identical"] for p in pairs),
        "pairs": pairs,
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
