"""A new user's first hour, run as written (issue 28): the README's quick-start commands in order on
the shared BraTS cases (FLAIR and T1c), then a DICOM study folder (the shared Philips CT series
with a localizer and dose-report screenshots beside it), each output and message checked.

Run: ``python tools/walkthrough.py WORKDIR [--shared ../shared] [--iterations 4]``. Exit code 0 when
every step met its checks; otherwise the first failed step and what it printed. The sizes are
the README's made small (a few steps at 32², cropped volumes) so that it runs in minutes on a CPU;
``tests/test_walkthrough.py`` runs it in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
BRATS_CASES = ("0001", "0002", "0005", "0006")  # the last is the test case (imagesTs, labelsTs)
SMALL = ["--image-size", "32", "--workers", "0", "--quiet"]


class StepFailed(Exception):
    pass


def masam(workdir: Path, *args: str, expect: int = 0) -> tuple[str, str]:
    """``masam ARGS`` in ``workdir`` as the user types it; its stdout and stderr."""
    env = {**os.environ, "MASAM_THREADS": os.environ.get("MASAM_THREADS", "1")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "masam", *args], cwd=workdir, env=env, capture_output=True, text=True)
    print(f"$ masam {' '.join(args)}  -> exit {done.returncode}")
    if done.returncode != expect:
        raise StepFailed(f"masam {args[0]}: exit {done.returncode}, expected {expect}\n{done.stdout}\n{done.stderr}")
    return done.stdout, done.stderr


def check(condition: bool, what: str, output: str = "") -> None:
    if not condition:
        raise StepFailed(f"{what}\n{output}")


def _crop(path: Path, centre) -> np.ndarray:
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    z, y, x = (int(c) for c in centre)
    return array[z - 4 : z + 4, y - 48 : y + 48 : 3, x - 48 : x + 48 : 3]


def write_brats(shared: Path, root: Path) -> Path:
    """MyData: BraTS FLAIR (_0000) and T1c (_0001) around each tumour, labels tumour = any class."""
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)
    for i, case in enumerate(BRATS_CASES):
        folder = shared / "data" / "deepmedic_brats2015" / f"brats_2013_pat{case}_1"
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "OTMultiClass.nii.gz")))
        centre = np.clip(np.mean(np.nonzero(label > 0), axis=1), [4, 48, 48], np.array(label.shape) - [4, 48, 48])
        split = "Ts" if i == len(BRATS_CASES) - 1 else "Tr"
        arrays = {f"images{split}/brats{case}_0000": _crop(folder / "Flair_subtrMeanDivStd.nii.gz", centre),
                  f"images{split}/brats{case}_0001": _crop(folder / "T1c_subtrMeanDivStd.nii.gz", centre),
                  f"labels{split}/brats{case}": (_crop(folder / "OTMultiClass.nii.gz", centre) > 0)}  # fmt: skip
        for name, array in arrays.items():
            image = sitk.GetImageFromArray(array.astype(np.uint8 if name.startswith("labels") else np.float32))
            image.SetSpacing((3.0, 3.0, 1.0))
            sitk.WriteImage(image, str(root / f"{name}.nii.gz"))
    meta = {"channel_names": {"0": "FLAIR", "1": "T1c"}, "labels": {"background": 0, "tumour": 1},
            "file_ending": ".nii.gz", "numTraining": len(BRATS_CASES) - 1}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def brats_steps(workdir: Path, shared: Path, iterations: int) -> None:
    """The quick start: check, train from scratch, predict with overlays, evaluate."""
    write_brats(shared, workdir / "MyData")
    out, _ = masam(workdir, "check", "-d", "MyData")
    check(out.splitlines()[-1] == "usable" and "size (x, y, z)" in out, "check: usable, sizes in (x, y, z)", out)
    masam(workdir, "train", "-d", "MyData", "-o", "runs/scratch", "--arch", "vit_tiny", "--preset", "scratch",
          "--iterations", str(iterations), *SMALL)  # fmt: skip
    check((workdir / "runs/scratch/model_best.safetensors").is_file(), "train: runs/scratch/model_best.safetensors")
    out, err = masam(workdir, "predict", "-m", "runs/scratch", "-i", "MyData/imagesTs", "-o", "predictions",
                     "--overlays", "--quiet")  # fmt: skip
    lines = out.splitlines()
    check(lines[0] == "model: runs/scratch/model_best.safetensors", "predict: names the model it used", out)
    check(lines[1].startswith("post-processing: none"), "predict: says whether post-processing applied", out)
    check(lines[-1] == "wrote 1 prediction(s) to predictions", "predict: one prediction", out + err)
    check(any((workdir / "predictions/overlays").glob("brats0006_*.png")), "predict: overlays written")
    out, _ = masam(workdir, "evaluate", "-p", "predictions", "-r", "MyData/labelsTs", "-o", "predictions/metrics.json")
    metrics = json.loads((workdir / "predictions/metrics.json").read_text())
    check(set(metrics["mean_per_class"]) == {"tumour"}, "evaluate: the class named as the model names it", out)


def write_study(shared: Path, study: Path) -> None:
    """The Philips CT series, a one-image localizer and two dose-report screenshots (Secondary
    Capture), each a series of its own, as a scanner exports a study."""
    ct = Path(shutil.copytree(shared / "data" / "dicom" / "philips_ct_phantom", study / "ct"))
    for folder, names in (("survey", ["I10"]), ("dose", ["I20", "I30"])):
        (study / folder).mkdir()
        uid = generate_uid()
        for name in names:
            ds = pydicom.dcmread(ct / name)
            ds.SeriesInstanceUID, ds.SeriesNumber = uid, 1 if folder == "survey" else 501
            ds.SeriesDescription = "Survey" if folder == "survey" else "Dose Report"
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            if folder == "survey":
                ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
            else:
                ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
            ds.save_as(study / folder / name)


def dicom_steps(workdir: Path, shared: Path, iterations: int) -> None:
    """A CT model (the demo's phantom) on a DICOM study folder; ``-m runs/`` with two kinds of run."""
    sys.path.insert(0, str(ROOT / "src"))
    from masam.demo import write_phantom_dataset

    write_phantom_dataset(workdir / "Phantom", train_cases=3, test_cases=0)
    masam(workdir, "train", "-d", "Phantom", "-o", "runs/ct", "--arch", "vit_tiny", "--preset", "scratch",
          "--iterations", str(iterations), *SMALL)  # fmt: skip
    write_study(shared, workdir / "dicom_study")
    out, err = masam(workdir, "predict", "-m", "runs/ct", "-i", "dicom_study/", "-o", "pred/", "--output-format",
                     "dicom-seg", "--mode", "fast", "--quiet")  # fmt: skip
    check(sorted(p.name for p in (workdir / "pred").glob("[!.]*")) == ["STD_BRAIN_5MM_201.dcm",
          "STD_BRAIN_5MM_201.nii.gz"], "predict: the CT series alone, as DICOM-SEG and NIfTI", out + err)  # fmt: skip
    check(out.splitlines()[-1] == "wrote 1 prediction(s) to pred/ (STD_BRAIN_5MM_201.nii.gz); skipped 2 series "
          "(Dose_Report_501, Survey_1)", "predict: one summary line of what was written and skipped", out)  # fmt: skip
    _, err = masam(workdir, "predict", "-m", "runs/", "-i", "MyData/imagesTs", "-o", "p2", expect=1)
    check("holds runs that are not folds of one cross-validation" in err, "predict -m runs/: refused", err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="an empty folder to work in (the user's current folder)")
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("MASAM_SHARED", ROOT.parent / "shared")))
    parser.add_argument("--iterations", type=int, default=4, help="training steps (the README's: 600)")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        brats_steps(args.workdir, args.shared, args.iterations)
        dicom_steps(args.workdir, args.shared, args.iterations)
    except StepFailed as err:
        print(f"walkthrough: FAILED: {err}", file=sys.stderr)
        return 1
    print("walkthrough: every step met its checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
