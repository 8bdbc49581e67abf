"""Training loses nothing: kill -9 at random moments, non-finite loss; prediction survives OOM."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import pytest
import torch

import masam
import masam.train.trainer as trainer_module
from masam.cli import main
from masam.data import Normalization
from masam.infer import Predictor
from tests.conftest import ROOT
from tests.data.helpers import make_dataset
from tests.model.helpers import randomise
from tests.train.helpers import TINY, assert_same, trained


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("rel") / "D", cases=3, shape=(6, 40, 48))


def test_sigkill_at_random_moments_then_resume_ends_with_the_same_weights(dataset, tmp_path):
    args = [
        "train",
        "-d",
        str(dataset),
        *TINY,
        "--iterations",
        "14",
        "--batch-size",
        "2",
        "--val-every",
        "0",
        "--save-every",
        "1",
    ]
    assert main([*args, "-o", str(tmp_path / "full")]) == 0
    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    rng = random.Random(0)
    kills, finished = 0, False
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-m", "masam", *args, "-o", str(run), "--resume"], env=env)
        try:
            proc.wait(timeout=rng.uniform(2.5, 5.0) if kills < 3 else 120)
            assert proc.returncode == 0
            finished = True
            break
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            state = run / "training_state.pt"
            if state.exists():  # whatever the moment, the last complete state loads
                assert torch.load(state, weights_only=True)["step"] <= 14
    assert finished and kills >= 1
    assert_same(trained(tmp_path / "full"), trained(run))


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_state(dataset, tmp_path, monkeypatch, capsys):
    real = trainer_module.segmentation_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, ce, dice = real(*args, **kwargs)
        return (loss * float("nan"), ce, dice) if calls["n"] == 4 else (loss, ce, dice)

    monkeypatch.setattr(trainer_module, "segmentation_loss", poisoned)
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "-d",
            str(dataset),
            "-o",
            str(run),
            *TINY,
            "--iterations",
            "8",
            "--batch-size",
            "2",
            "--save-every",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1 and "loss became nan at step 3" in err and "Traceback" not in err
    state = torch.load(run / "training_state.pt", weights_only=True)
    assert state["step"] == 3 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_prediction_halves_the_batch_when_memory_runs_out():
    torch.manual_seed(0)
    model = randomise(masam.load_model(arch="vit_tiny", num_classes=2, image_size=64, rank=4)).eval()
    predictor = Predictor(model, Normalization("CT"), batch_size=4)
    slices = torch.rand(9, 1, 64, 64)
    expected = dict(Predictor(model, Normalization("CT"), batch_size=1).slice_probabilities(slices))
    forward = model.forward

    def limited(x, boxes=None):
        if x.shape[0] > 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory")
        return forward(x, boxes)

    model.forward = limited
    got = dict(predictor.slice_probabilities(slices))
    assert predictor.batch_size == 1
    for i in expected:
        assert torch.allclose(got[i], expected[i], atol=1e-6)
