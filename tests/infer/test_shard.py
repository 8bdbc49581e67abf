"""Prediction split into parts (nnU-Net's job-array convention) and across torchrun ranks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import masam
from masam.cli import main
from masam.data import Normalization, read_volume
from masam.infer.shard import distributed_part, select_part
from tests.conftest import ROOT
from tests.data.helpers import phantom, write_volume
from tests.model.helpers import randomise


def test_parts_follow_nnunet_sorted_every_kth():
    cases = ["e", "a", "d", "b", "c"]
    assert select_part(cases, 2, 0) == ["a", "c", "e"] and select_part(cases, 2, 1) == ["b", "d"]
    parts = [select_part(cases, 3, i) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(cases) and parts[2] == ["c"]
    assert select_part(cases, 7, 6) == [] and select_part(cases, 1, 0) == sorted(cases)
    with pytest.raises(ValueError, match="--part-id must be between 0 and 1 .--num-parts 2., got 2"):
        select_part(cases, 2, 2)
    with pytest.raises(ValueError, match="--num-parts must be at least 1, got 0"):
        select_part(cases, 0, 0)


def test_distributed_part_reads_torchrun_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert distributed_part() == (1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert distributed_part() == (4, 3)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK 4 of WORLD_SIZE 4"):
        distributed_part()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """A tiny model file and a folder of four cases."""
    root = tmp_path_factory.mktemp("cohort")
    torch.manual_seed(0)
    model = masam.load_model(arch="vit_tiny", num_classes=2, image_size=64, rank=4)
    randomise(model)
    model.metadata = {"normalization": Normalization("CT").to_dict()}
    masam.save_weights(model, root / "model.safetensors")
    (root / "in").mkdir()
    for i in range(4):
        write_volume(root / "in" / f"case{i}_0000.nii.gz", phantom((5, 24, 24), seed=i)[0], (1.0, 1.0, 2.0))
    return root


def _predict(cohort, out, *extra):
    return ["predict", "-m", str(cohort / "model.safetensors"), "-i", str(cohort / "in"), "-o", str(out), "--quiet",
            "--precision", "fp32", *extra]  # fmt: skip


def test_job_array_parts_predict_their_cases_only(cohort, tmp_path):
    assert main(_predict(cohort, tmp_path / "p1", "--num-parts", "3", "--part-id", "1")) == 0
    assert sorted(p.name for p in (tmp_path / "p1").glob("[!.]*")) == ["case1.nii.gz"]
    assert main(_predict(cohort, tmp_path / "p0", "--num-parts", "3", "--part-id", "0")) == 0
    assert sorted(p.name for p in (tmp_path / "p0").glob("[!.]*")) == ["case0.nii.gz", "case3.nii.gz"]
    assert main(_predict(cohort, tmp_path / "px", "--num-parts", "3", "--part-id", "3")) == 1


def test_torchrun_with_two_gloo_ranks_predicts_each_case_once_as_one_process_does(cohort, tmp_path):
    assert main(_predict(cohort, tmp_path / "one", "--save-probabilities")) == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "masam"]
    args = _predict(cohort, tmp_path / "two", "--save-probabilities")
    done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "wrote 4 prediction(s)" in done.stdout
    ranks = {line.split(":")[0]: line.split(": ")[1].split(", ") for line in lines if line.startswith("rank ")}
    assert ranks == {"rank 0": ["case0.nii.gz", "case2.nii.gz"], "rank 1": ["case1.nii.gz", "case3.nii.gz"]}
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    for i in range(4):
        one = read_volume(tmp_path / "one" / f"case{i}.nii.gz")
        two = read_volume(tmp_path / "two" / f"case{i}.nii.gz")
        assert np.array_equal(one.array, two.array) and one.spacing == two.spacing
        p_one = np.load(tmp_path / "one" / f"case{i}_probabilities.npz")["probabilities"]
        p_two = np.load(tmp_path / "two" / f"case{i}_probabilities.npz")["probabilities"]
        assert p_one.shape == (3, 5, 24, 24) and np.array_equal(p_one, p_two)
