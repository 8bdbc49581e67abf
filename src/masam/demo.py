"""``masam demo``: a complete run on a synthetic phantom, with no data and no SAM checkpoint.

It writes a small abdomen-like CT phantom dataset in the nnU-Net layout (a body with fat and
muscle, a large liver, two kidneys and a spine, each with its own intensity and texture, noise,
anisotropic spacing), trains ``vit_tiny`` from scratch on the CPU, predicts the held-out cases,
evaluates them and leaves predictions, overlays and a metrics table in the output folder.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import MasamError
from .options import setting
from .run_folder import RunFolder

LABELS = {"background": 0, "liver": 1, "kidney": 2, "spine": 3}
SPACING = (1.2, 1.2, 3.0)  # x, y, z in mm


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Low-frequency texture: coarse noise upsampled."""
    coarse = rng.normal(0, 1, tuple(max(2, int(n / scale)) for n in shape))
    image = sitk.GetImageFromArray(coarse.astype(np.float32))
    resampled = sitk.Resample(
        image, [shape[2], shape[1], shape[0]], sitk.Transform(), sitk.sitkLinear, (0, 0, 0),
        [c / n for c, n in zip(coarse.shape[::-1], shape[::-1])],
    )  # fmt: skip
    return sitk.GetArrayFromImage(resampled)


def phantom_case(seed: int, shape: tuple[int, int, int] = (24, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """One phantom: CT values (int16, HU-like) and labels (uint8), arrays ``[z, y, x]``."""
    rng = np.random.default_rng(seed)
    d, h, w = shape
    z, y, x = np.meshgrid(np.arange(d), np.arange(h), np.arange(w), indexing="ij")
    cy, cx = h / 2 + rng.uniform(-2, 2), w / 2 + rng.uniform(-2, 2)
    body = ((y - cy) / (0.42 * h)) ** 2 + ((x - cx) / (0.46 * w)) ** 2 <= 1
    fat = body & (((y - cy) / (0.36 * h)) ** 2 + ((x - cx) / (0.40 * w)) ** 2 > 1)
    label = np.zeros(shape, np.uint8)

    def ellipsoid(c, r):
        return ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2 <= 1

    liver = ellipsoid(
        (d * rng.uniform(0.4, 0.6), cy - 0.05 * h, cx - 0.16 * w),
        (d * 0.45, h * rng.uniform(0.17, 0.22), w * rng.uniform(0.15, 0.2)),
    )
    label[liver & body] = 1
    for side in (-1, 1):
        kidney = ellipsoid(
            (d * rng.uniform(0.45, 0.6), cy + 0.12 * h, cx + side * 0.2 * w + rng.uniform(-1.5, 1.5)),
            (d * 0.25, h * rng.uniform(0.08, 0.1), w * rng.uniform(0.06, 0.08)),
        )
        label[kidney & body & (label == 0)] = 2
    spine = ((y - (cy + 0.27 * h)) / (0.07 * h)) ** 2 + ((x - cx) / (0.07 * w)) ** 2 <= 1
    label[spine & (label == 0)] = 3

    image = np.full(shape, -1000.0)
    image[body] = 40 + 15 * _smooth_noise(rng, shape, 6)[body]  # muscle / soft tissue
    image[fat] = -100 + 20 * _smooth_noise(rng, shape, 4)[fat]
    texture = _smooth_noise(rng, shape, 3)
    for value, mean, spread in ((1, 110, 12), (2, 180, 15), (3, 400, 60)):
        mask = label == value
        image[mask] = mean + spread * texture[mask]
    image += rng.normal(0, 18, shape)
    return image.astype(np.int16), label


def write_phantom_dataset(root: Path, train_cases: int = 16, test_cases: int = 3, seed: int = 0) -> Path:
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(train_cases + test_cases):
        image, label = phantom_case(seed * 1000 + i)
        split = "Tr" if i < train_cases else "Ts"
        name = f"phantom_{i:03d}"
        for array, folder, suffix in ((image, f"images{split}", "_0000"), (label, f"labels{split}", "")):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing(SPACING)
            itk.SetOrigin((-40.0, -30.0, 100.0))
            sitk.WriteImage(itk, str(root / folder / f"{name}{suffix}.nii.gz"), useCompression=True)
    meta = {"channel_names": {"0": "CT"}, "labels": LABELS, "file_ending": ".nii.gz", "numTraining": train_cases}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root


@dataclass
class DemoConfig:
    """Settings of ``masam demo``."""

    output: str = setting("demo_output", "output folder", "files", short="-o")
    iterations: int = setting(600, "training steps", "schedule")
    cases: int = setting(16, "training cases to generate", "data")
    seed: int = setting(0, "random seed", "runtime")
    device: str = setting("cpu", "cpu or cuda", "runtime")


def _train_config(dataset: Path, run: Path, iterations: int, seed: int, device: str):
    """The ``scratch`` preset (the from-scratch recipe that learns on the phantom in minutes on a
    CPU) at the phantom's small size, validation left to the held-out test cases."""
    from .train import resolve_train_config

    given = {
        "dataset": str(dataset), "output": str(run), "arch": "vit_tiny", "image_size": 64, "iterations": iterations,
        "val_every": 0, "val_fraction": 0.0, "workers": 1, "seed": seed, "device": device,
    }  # fmt: skip
    return resolve_train_config(given, "scratch")


def _check_output(out: Path) -> None:
    """The demo replaces only a folder it wrote itself (or an empty one)."""
    if out.exists() and not out.is_dir():
        raise MasamError(f"{out}: is a file; choose another demo output folder")
    if out.is_dir() and any(out.iterdir()) and not RunFolder(out / "run").config_file.is_file():
        raise MasamError(f"{out}: exists but holds no masam demo; choose another demo output folder")


def _staging(out: Path) -> Path:
    """Issue 28: a new demo is built beside the old one (``.NAME.partial``) and replaces it only
    once it has succeeded, so an interrupted or failed demo leaves the previous results whole."""
    staging = out.parent / f".{out.name}.partial"
    if staging.exists():  # left by a demo killed too hard to clean up
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def _swap_in(staging: Path, out: Path) -> None:
    """Put the finished demo in place of the old one: two renames, the old folder removed after.
    The run's config.json and the metrics name the final folder, not the staging one."""
    for path in (RunFolder(staging / "run").config_file, staging / "metrics.json"):
        if path.is_file():
            path.write_text(path.read_text().replace(json.dumps(str(staging))[1:-1], json.dumps(str(out))[1:-1]))
    old = out.parent / f".{out.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        print(f"replacing the previous demo results in {out}")
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _predict_and_evaluate(out: Path, dataset: Path, device: str) -> tuple[dict, Path, Path]:
    from .eval import evaluate_folders, write_results
    from .infer.predict_files import predict_inputs
    from .infer.predictor import Predictor

    print("[3/4] predicting the held-out cases")
    predictor = Predictor.from_files(out / "run", batch_size=8, device=device)
    report = predict_inputs(predictor, dataset / "imagesTs", out / "predictions", overlays=True)
    if report.failed:
        raise MasamError(f"prediction failed: {report.failed}")
    print("[4/4] evaluating")
    names = {v: k for k, v in LABELS.items() if v > 0}
    results = evaluate_folders(out / "predictions", dataset / "labelsTs", sorted(names), names)
    json_path, csv_path = write_results(results, out / "metrics.json")
    return results, json_path, csv_path


def _write_html_report(out: Path, dataset: Path, results: dict) -> Path:
    """The self-contained HTML report of the held-out cases, with the run's training curves."""
    from .eval.report import find_report_cases, write_report

    names = {v: k for k, v in LABELS.items() if v > 0}
    cases = find_report_cases(dataset / "imagesTs", out / "predictions", dataset / "labelsTs")
    return write_report(out / "report.html", results, cases, out / "run", names, title="masam demo")


def run_demo(
    output: str | Path,
    iterations: int = 600,
    train_cases: int = 16,
    test_cases: int = 3,
    seed: int = 0,
    device: str = "cpu",
) -> float:
    """Phantom data -> training -> prediction -> evaluation, built beside ``output`` and swapped in
    at the end (an interrupted demo leaves the previous one untouched). Returns the mean Dice."""
    out = Path(output).absolute()
    _check_output(out)
    staging = _staging(out)
    try:
        mean, lines = _demo_steps(staging, iterations, train_cases, test_cases, seed, device)
        _swap_in(staging, out)
    except BaseException:  # KeyboardInterrupt and the trainer's Interrupted too: no half demo
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for line in lines:
        print(line.replace(str(staging), str(out)))
    print(f"mean Dice: {mean:.4f}")  # the last line (README: Demo)
    return mean


def _demo_steps(out: Path, iterations: int, train_cases: int, test_cases: int, seed: int, device: str):
    """The demo's steps in ``out``: the mean Dice and the closing lines to print once it is in place."""
    from .eval import format_table
    from .train import Trainer

    started = time.time()
    dataset = write_phantom_dataset(out / "dataset", train_cases, test_cases, seed)
    print(f"[1/4] phantom dataset ({train_cases} training + {test_cases} test cases)")
    config = _train_config(dataset, out / "run", iterations, seed, device)
    print(f"[2/4] training vit_tiny from scratch for {iterations} steps on {device}")
    Trainer(config).run()
    results, json_path, csv_path = _predict_and_evaluate(out, dataset, device)
    report = _write_html_report(out, dataset, results)
    lines = [
        format_table(results),
        f"\nmodel:       {RunFolder(out / 'run').best_model}",
        f"predictions: {out / 'predictions'} (NIfTI with the input geometry)",
        f"overlays:    {out / 'predictions' / 'overlays'}",
        f"metrics:     {json_path} and {csv_path}",
        f"report:      {report}",
        f"time:        {time.time() - started:.0f} s",
    ]
    return results["mean"]["dice"], lines
