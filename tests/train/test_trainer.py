"""masam train: run folder, exact resume (also after SIGTERM), torchrun with two processes, real CT."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from masam.cli import main
from masam.data.io import read_volume
from masam.train.trainer import EpochSampler, boxes_for_training
from tests.conftest import ROOT, SHARED, require_shared
from tests.data.helpers import make_dataset, write_volume
from tests.train.helpers import TINY, assert_same, trained


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("train") / "D", cases=3, shape=(6, 40, 48))


def test_run_folder_and_exact_resume(dataset, tmp_path):
    # 2 training cases x 6 slices / batch 2 = 6 steps per epoch; 9 steps cross an epoch boundary
    args = ["train", "-d", str(dataset), *TINY, "--iterations", "9", "--batch-size", "2", "--val-every", "1"]
    assert main([*args, "-o", str(tmp_path / "full")]) == 0
    assert main([*args, "-o", str(tmp_path / "part"), "--stop-after", "4"]) == 0
    assert trained(tmp_path / "part").keys() == trained(tmp_path / "full").keys()
    assert main([*args, "-o", str(tmp_path / "part")]) == 1  # a state is there: --resume is required
    assert main([*args, "-o", str(tmp_path / "part"), "--resume"]) == 0
    assert_same(trained(tmp_path / "full"), trained(tmp_path / "part"))

    run = tmp_path / "full"
    names = {p.name for p in run.iterdir()}
    assert {
        "config.json",
        "log.jsonl",
        "model_best.safetensors",
        "model_last.safetensors",
        "training_state.pt",
        "tensorboard",
    } <= names
    assert list((run / "tensorboard").iterdir())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 10))
    assert all({"loss", "ce", "dice", "lr"} <= r.keys() for r in steps)
    assert any("val_dice" in r for r in log)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["iterations"] == 9 and config["model"]["arch"] == "vit_tiny"
    assert not [p for p in run.rglob(".tmp-*")]


def test_sigterm_saves_a_resumable_state(dataset, tmp_path):
    args = ["train", "-d", str(dataset), *TINY, "--iterations", "12", "--batch-size", "2", "--val-every", "0"]
    assert main([*args, "-o", str(tmp_path / "full")]) == 0
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "masam", *args, "-o", str(run)], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = run / "log.jsonl"
        if log.is_file() and len(log.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert b"resumable state saved" in err
    stopped = torch.load(run / "training_state.pt", weights_only=True)["step"]
    assert 2 <= stopped < 12
    assert main([*args, "-o", str(run), "--resume"]) == 0
    assert_same(trained(tmp_path / "full"), trained(run))


def test_two_processes_under_torchrun_train_as_one_with_the_global_batch(dataset, tmp_path):
    common = [*TINY, "-d", str(dataset), "--iterations", "4", "--val-every", "0", "--no-augment", "--fact-dropout", "0"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "masam",
        "train",
    ]
    done = subprocess.run(
        [*cmd, *common, "--batch-size", "2", "--check-sync", "-o", str(tmp_path / "ddp")],  # 1 per process
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["train", *common, "--batch-size", "2", "-o", str(tmp_path / "single")]) == 0
    assert_same(trained(tmp_path / "single"), trained(tmp_path / "ddp"), atol=1e-5)
    log = (tmp_path / "ddp" / "log.jsonl").read_text().splitlines()
    assert len(log) == 4  # rank 0 alone writes


def test_train_on_real_ct_volumes(tmp_path):
    folder = require_shared(SHARED / "data" / "totalsegmentator")
    root = tmp_path / "RealCT"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    pairs = [("example_ct_sm.nii.gz", "example_seg.nii.gz"), ("example_mr_sm.nii.gz", "example_seg_mr.nii.gz")]
    top = 0
    for i, (image, label) in enumerate(pairs * 2):
        volume = read_volume(folder / image)
        seg = read_volume(folder / label)
        organs = np.where(np.isin(seg.array, [1, 2, 3, 5]), seg.array, 0).astype(np.uint8)  # a few classes
        top = max(top, int(organs.max()))
        (root / "imagesTr" / f"c{i}_0000.nii.gz").symlink_to(folder / image)
        write_volume(root / "labelsTr" / f"c{i}.nii.gz", organs, volume.spacing, volume.origin, volume.direction)
    labels = {"background": 0, **{f"organ{v}": v for v in range(1, top + 1)}}
    meta = {"channel_names": {"0": "CT"}, "labels": labels, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "-d",
                str(root),
                "-o",
                str(run),
                *TINY,
                "--iterations",
                "3",
                "--batch-size",
                "2",
                "--val-every",
                "1",
            ]
        )
        == 0
    )
    assert {"config.json", "log.jsonl", "model_best.safetensors", "model_last.safetensors", "training_state.pt"} <= {
        p.name for p in run.iterdir()
    }
    cache = json.loads((run / "cache" / "plan.json").read_text())
    assert cache["modality"] == "CT" and len(cache["cases"]) == 4
    # the trained model predicts through masam predict with the input's geometry
    assert (
        main(
            [
                "predict",
                "-m",
                str(run),
                "-i",
                str(root / "imagesTr" / "c0_0000.nii.gz"),
                "-o",
                str(tmp_path / "p"),
                "--quiet",
            ]
        )
        == 0
    )
    written = read_volume(tmp_path / "p" / "c0.nii.gz")
    assert written.array.shape == read_volume(folder / "example_ct_sm.nii.gz").array.shape


def test_paper_preset_box_prompts_and_the_readme_predict_options(dataset, tmp_path):
    run = tmp_path / "tumour"
    args = ["train", "-d", str(dataset), "-o", str(run), "--preset", "paper", *TINY]
    assert main([*args, "--iterations", "3", "--batch-size", "2", "--prompt", "box", "--val-every", "1"]) == 0
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["lr"], train["warmup"], train["power"], train["weight_decay"]) == (
        8e-4,
        3,
        7.0,
        0.1,
    )  # preset + overrides
    assert train["batch_size"] == 2 and train["prompt"] == "box" and train["image_size"] == 64
    out = tmp_path / "pred"
    images, labels = dataset / "imagesTr", dataset / "labelsTr"
    extra = ["--boxes-from-labels", str(labels), "--output-format", ".nrrd", "--stride", "2", "--save-probabilities"]
    assert main(["predict", "-m", str(run), "-i", str(images), "-o", str(out), "--quiet", *extra]) == 0
    written = sorted(p.name for p in out.glob("*.nrrd"))
    assert written == ["case00.nrrd", "case01.nrrd", "case02.nrrd"]
    assert read_volume(out / "case00.nrrd").array.shape == (6, 40, 48)


def test_bf16_accumulation_and_gradient_checkpointing_train_and_predict(dataset, tmp_path):
    run = tmp_path / "bf16"
    extra = ["--precision", "bf16", "--accumulate", "2", "--grad-checkpoint", "--iterations", "2", "--batch-size", "1"]
    extra += ["--host-allocator", "lean-forward"]
    assert main(["train", "-d", str(dataset), "-o", str(run), *TINY, *extra, "--val-every", "0"]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(np.isfinite(r["loss"]) for r in log)
    stored = json.loads((run / "config.json").read_text())["train"]
    assert stored["grad_checkpoint"] is True and stored["host_allocator"] == "lean-forward"
    image = dataset / "imagesTr" / "case00_0000.nii.gz"
    assert (
        main(["predict", "-m", str(run), "-i", str(image), "-o", str(tmp_path / "p"), "--precision", "bf16", "--quiet"])
        == 0
    )
    assert read_volume(tmp_path / "p" / "case00.nii.gz").array.shape == (6, 40, 48)
    assert (
        main(["train", "-d", str(dataset), "-o", str(tmp_path / "x"), *TINY, "--precision", "fp16"]) == 1
    )  # CUDA only


def test_unknown_precision_is_refused_before_anything_is_written(tmp_path):
    from masam.train import TrainConfig, Trainer

    config = TrainConfig(dataset=str(tmp_path / "none"), output=str(tmp_path / "run"), precision="fp8")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, got 'fp8'"):
        Trainer(config, progress=False).run()
    assert not (tmp_path / "run").exists()


def test_epoch_sampler_deals_one_permutation_to_the_ranks():
    whole = EpochSampler(10, seed=3, epoch=2).indices
    assert sorted(whole) == list(range(10))
    r0, r1 = EpochSampler(10, 3, 2, ddp_rank=0, world=2).indices, EpochSampler(10, 3, 2, ddp_rank=1, world=2).indices
    assert r0 == whole[0::2] and r1 == whole[1::2]
    assert EpochSampler(10, 3, 2, start=4).indices == whole[4:]
    assert EpochSampler(10, 3, 3).indices != whole
    assert len(EpochSampler(5, 0, 0, ddp_rank=1, world=2)) == 3  # padded to a multiple of the world size


def test_training_boxes_surround_the_foreground_with_bounded_jitter():
    label = torch.zeros(1, 2, 40, 40, dtype=torch.long)
    label[0, 0, 10:20, 5:25] = 1
    boxes = boxes_for_training(label, torch.Generator().manual_seed(0), jitter=0.1)
    assert torch.isnan(boxes[0, 1]).all()  # no target: no box
    x0, y0, x1, y1 = boxes[0, 0].tolist()
    assert abs(x0 - 5) <= 2 and abs(x1 - 24) <= 2 and abs(y0 - 10) <= 1 and abs(y1 - 19) <= 1
    assert not math.isclose(x0, 5.0) or not math.isclose(y0, 10.0)
