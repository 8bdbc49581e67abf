"""The command line as a user runs it."""

from __future__ import annotations

import torch

import masam
from masam.cli import main
from tests.conftest import official_sam_state, original_adapter_state


def test_convert_writes_a_loadable_file_and_params_prints_the_counts(tmp_path, capsys):
    sam = tmp_path / "sam.pth"
    state = official_sam_state("vit_tiny", 128)
    torch.save(state, sam)
    original = tmp_path / "orig.pth"
    torch.save(original_adapter_state(state, rank=4, num_classes=2, width=24), original)
    out = tmp_path / "ours.safetensors"
    args = ["convert", "--sam-checkpoint", str(sam), "--weights", str(original), "-o", str(out)]
    assert main([*args, "--image-size", "64"]) == 0
    assert masam.load_model(sam, out).config.num_classes == 2

    assert main(["params", "--arch", "vit_b", "--num-classes", "4"]) == 0
    assert "116,347,985" in capsys.readouterr().out


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    assert main(["convert", "--sam-checkpoint", str(missing), "--weights", str(missing), "-o", "x"]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "nope.pth: no such file" in err and "Traceback" not in err


def test_preprocess_command_fills_the_cache_and_reports_bad_datasets(tmp_path, capsys):
    import numpy as np

    from tests.data.helpers import make_dataset

    root = make_dataset(tmp_path / "D", cases=2, shape=(6, 20, 24))
    assert main(["preprocess", "-d", str(root), "-o", str(tmp_path / "cache"), "--image-size", "32"]) == 0
    assert np.load(tmp_path / "cache" / "case01_image.npy").shape == (6, 1, 32, 32)
    (root / "dataset.json").write_text("[")
    assert main(["preprocess", "-d", str(root), "-o", str(tmp_path / "c2")]) == 1
    assert "dataset.json: not valid JSON" in capsys.readouterr().err


def test_predict_with_an_original_masam_file_reads_ct_in_the_originals_convention(tmp_path, capsys):
    import numpy as np

    from masam.data import read_volume
    from tests.data.helpers import phantom, write_volume

    sam = tmp_path / "sam.pth"
    state = official_sam_state("vit_tiny", 128)
    torch.save(state, sam)
    original = tmp_path / "epoch_299.pth"
    torch.save(original_adapter_state(state, rank=4, num_classes=2, width=24), original)
    image = write_volume(tmp_path / "case_0000.nii.gz", phantom((5, 30, 30))[0], (1.0, 1.0, 2.0))
    args = [
        "predict",
        "-m",
        str(original),
        "--sam-checkpoint",
        str(sam),
        "-i",
        str(image),
        "-o",
        str(tmp_path / "p"),
        "--quiet",
    ]
    # issue 12: an original file predicts CT in the original's convention (its test.py reads CT only)
    assert main([*args, "--modality", "MRI"]) == 1
    assert "predicts CT volumes only" in capsys.readouterr().err
    assert main(args) == 0
    written = read_volume(tmp_path / "p" / "case.nii.gz")
    assert written.array.shape == (5, 30, 30) and np.isin(np.unique(written.array), [0, 1, 2]).all()


def test_loader_benchmark_script_runs_and_writes_its_json(tmp_path):
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "loader_throughput.py"),
        "--image-size",
        "64",
        "--stacks",
        "6",
        "--workers",
        "0",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["stacks"] == 6 and result["stacks_per_s"] > 0 and result["image_size"] == 64


def test_issue_7_benchmark_scripts_run_and_write_their_json(tmp_path):
    """The training-step and volume-scaling benchmarks, at toy sizes (the real runs take minutes)."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    step = tmp_path / "step.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "training_step.py"), "--archs", "vit_tiny", "--image-size", "64"]
    cmd += ["--settings", "fp32", "fp32-ckpt", "--out", str(step)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    rows = json.loads(step.read_text())["rows"]
    assert [r["setting"] for r in rows] == ["fp32", "fp32-ckpt"]
    assert all(r["loss_finite"] and r["peak_rss_gib"] > 0 and r["seconds_per_step"] > 0 for r in rows)
    assert rows[1]["host_allocator"] == {"forward": "lean", "backward": "lean"}

    scaling = tmp_path / "scaling.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "volume_scaling.py"), "--arch", "vit_tiny", "--modes", "fast"]
    cmd += ["--slices", "5", "10", "--slice-size", "32", "--sizes", "32", "64", "--out", str(scaling)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    fast = json.loads(scaling.read_text())["fast"]
    assert [p["slices"] for p in fast["by_slices"]["points"]] == [5, 10]
    assert [p["image_size"] for p in fast["by_image_size"]["points"]] == [32, 64]
