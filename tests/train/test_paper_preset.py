"""Issue 12: the paper's protocol as presets that change the run (no hold-out, no validation,
snapshots, the last model, mixed precision on CUDA, the decoder head re-initialised), and the
box task's one box per stack."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import masam.precision
import masam.train.trainer
from masam.cli import main
from masam.data.prepare import prepare_btcv
from masam.errors import ConfigError, MissingFileError
from masam.model.checkpoint import load_model
from masam.precision import resolve_training_precision
from masam.run_folder import find_weights
from masam.train import TrainConfig, Trainer
from masam.train.config import PRESETS, resolve_train_config
from tests.conftest import official_sam_state
from tests.data.helpers import make_btcv_raw, make_dataset

TINY = ["--arch", "vit_tiny", "--image-size", "32", "--rank", "4", "--warmup", "2", "--workers", "0", "--quiet"]


def test_btcv_preset_trains_on_every_case_without_validation_keeps_snapshots_and_designates_the_last(tmp_path):
    dataset = prepare_btcv(make_btcv_raw(tmp_path / "raw"), tmp_path / "BTCV13", merge={})  # 13 classes
    run = tmp_path / "run"
    args = ["train", "-d", str(dataset), "-o", str(run), "--preset", "btcv", *TINY]
    assert main([*args, "--batch-size", "4", "--epochs", "2", "--stop-epoch", "2", "--snapshot-every", "1"]) == 0
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["val_fraction"], train["val_every"], train["predict_with"]) == (0.0, 0, "last")
    assert train["precision"] == "mixed" and train["reinit_head"] and train["merge_labels"] == "13:12"
    plan = json.loads((run / "cache" / "plan.json").read_text())
    assert plan["cases"] == ["btcv_0001", "btcv_0002"]  # every training case: nothing held out
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4] and not any("val_dice" in r for r in log)
    assert sorted(p.name for p in run.glob("model_*.safetensors")) == [
        "model_epoch_1.safetensors", "model_epoch_2.safetensors", "model_last.safetensors",
    ]  # fmt: skip
    assert find_weights(run) == run / "model_last.safetensors"
    # the merge: 13 becomes 12 in the cache, 12 classes
    assert not any((np.load(p) == 13).any() for p in (run / "cache").glob("*_label.npy"))
    assert (np.load(run / "cache" / "btcv_0001_label.npy") == 12).any()
    model = load_model(None, run / "model_last.safetensors")
    assert model.config.num_classes == 12 and model.input_spec.modality == "CT"
    assert model.input_spec.orientation == "original"  # issue 24: prediction turns as training did
    assert model.input_spec.normalization[0]["stack_minmax"]
    last, snapshot = (load_model(None, run / f"model_{n}.safetensors") for n in ("last", "epoch_2"))
    assert all(torch.equal(a, b) for a, b in zip(last.state_dict().values(), snapshot.state_dict().values()))
    out = tmp_path / "pred"
    assert main(["predict", "-m", str(run), "-i", str(dataset / "imagesTs"), "-o", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["btcv_0035.nii.gz", "btcv_0040.nii.gz"]


def test_default_run_still_holds_out_validates_and_designates_the_best(tmp_path):
    config = resolve_train_config({"dataset": "d", "output": "o", "arch": "vit_tiny"})
    assert (config.val_fraction, config.val_every, config.predict_with, config.snapshot_every) == (0.2, 20, "best", 0)
    assert config.precision == "fp32" and not config.reinit_head
    assert PRESETS["tumour-box"]["ct_window"] == (-50.0, 200.0) and PRESETS["tumour-box"]["box_per"] == "stack"


@pytest.mark.parametrize(
    ("device", "capability", "bf16", "expected"),
    [("cpu", None, False, "fp32"), ("cuda", (8, 0), True, "fp16"), ("cuda", (7, 0), False, "fp16"),
     ("cuda", (5, 2), True, "bf16"), ("cuda", (3, 7), False, "fp32")],
)  # fmt: skip
def test_auto_precision_is_fp16_on_cuda_bf16_without_fp16_and_fp32_on_the_cpu(
    monkeypatch, device, capability, bf16, expected
):
    monkeypatch.setattr(masam.precision.torch.cuda, "get_device_capability", lambda d=None: capability)
    monkeypatch.setattr(masam.precision.torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    for name in ("mixed", "auto"):  # auto: the old name, as run folders before issue 25 store it
        assert resolve_training_precision(name, torch.device(device)) == expected
    assert resolve_training_precision("bf16", torch.device(device)) == "bf16"  # an explicit choice stays


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sam") / "sam.pth"
    torch.save(official_sam_state("vit_tiny", 32, seed=5, num_mask_tokens=3), path)  # fits 2 classes
    return path


@pytest.mark.parametrize("reinit", [False, True])
def test_the_decoder_head_is_re_initialised_even_where_sams_fits(tmp_path, sam_file, reinit):
    dataset = make_dataset(tmp_path / "D", cases=2, shape=(3, 16, 16))  # 2 classes + background
    state = torch.load(sam_file, weights_only=True)
    config = TrainConfig(
        dataset=str(dataset), output=str(tmp_path / "run"), sam_checkpoint=str(sam_file), image_size=32, rank=4,
        workers=0, reinit_head=reinit,
    )  # fmt: skip
    trainer = Trainer(config, progress=False)
    trainer.setup()
    own = trainer.model.state_dict()
    # the groups that fit SAM's shapes (the hypernetworks' last layers never do: MA-SAM upscales differently)
    head = [k for k in own if k.startswith(("mask_decoder.mask_tokens", "mask_decoder.iou_prediction_head"))]
    assert len(head) == 7 and all(own[k].shape == state[k].shape for k in head)
    same = [torch.equal(own[k], state[k]) for k in head]
    assert (not any(same)) if reinit else all(same)
    rest = ["mask_decoder.iou_token.weight", "mask_decoder.transformer.layers.0.self_attn.q_proj.weight"]
    assert all(torch.equal(own[k], state[k]) for k in rest)


def test_box_per_stack_gives_every_slice_slice_zeros_box_and_box_prompts_pick_the_box_augmentation(tmp_path):
    label = torch.zeros(2, 5, 16, 16, dtype=torch.uint8)
    for j in range(5):
        label[:, j, 2 + j : 8 + j, 3 : 9 + j] = 1
    common = {"dataset": "d", "output": str(tmp_path), "prompt": "box", "box_jitter": 0.0}
    per_slice, _ = Trainer(TrainConfig(**common), progress=False)._batch_boxes(label)
    per_stack, _ = Trainer(TrainConfig(**common, box_per="stack"), progress=False)._batch_boxes(label)
    assert len({tuple(b.tolist()) for b in per_slice[0]}) == 5
    assert torch.equal(per_stack, per_slice[:, :1].expand(-1, 5, -1))



def test_each_preset_names_its_augmentation_and_old_run_folders_keep_theirs():
    """masam's own policy by default (issue 27); the paper's presets the original's, the box task's
    its box variant; a run folder saved before the setting had a default resumes with what it used."""
    given = {"dataset": "d", "output": "o", "arch": "vit_tiny"}
    assert resolve_train_config(given).augment_policy == "masam"
    for preset in ("paper", "btcv", "prostate", "endovis"):
        assert resolve_train_config(given, preset).augment_policy == "original"
    assert resolve_train_config(given, "tumour-box").augment_policy == "original-box"
    assert resolve_train_config({**given, "augment_policy": "original"}).augment_policy == "original"
    saved = {**TrainConfig(**given).to_dict(), "augment_policy": None}
    assert TrainConfig.from_dict(saved).augment_policy == "original"
    assert TrainConfig.from_dict({**saved, "prompt": "box"}).augment_policy == "original-box"


def test_mri_rule_is_robust_by_default_the_originals_in_the_presets_and_kept_by_old_run_folders():
    """Issue 27: masam's own recipe normalises MRI by the robust rule; the paper presets keep the
    original's percentile rule; a run folder written before the setting resumes with the percentile."""
    given = {"dataset": "d", "output": "o", "arch": "vit_tiny"}
    assert resolve_train_config(given).mri_rule == "robust"
    assert resolve_train_config(given, "scratch").mri_rule == "robust"
    for preset in ("paper", "btcv", "prostate", "endovis", "tumour-box"):
        assert resolve_train_config(given, preset).mri_rule == "percentile"
    saved = TrainConfig(**given).to_dict()
    del saved["mri_rule"]
    assert TrainConfig.from_dict(saved).mri_rule == "percentile"
    assert TrainConfig.from_dict({**saved, "mri_rule": "robust"}).mri_rule == "robust"


def test_device_auto_is_the_default_and_gives_the_originals_mixed_precision_on_a_gpu(monkeypatch, tmp_path):
    """Issue 24: without --device, a preset run on a machine with a GPU trains on it in fp16 with
    a GradScaler and TF32 (the original's train.py:44-59), and on the CPU where there is none."""
    config = resolve_train_config({"dataset": "d", "output": str(tmp_path), "arch": "vit_tiny"}, "btcv")
    assert config.device == "auto" and config.precision == "mixed"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    trainer = Trainer(config, progress=False)
    trainer._setup_processes()
    assert (trainer.device.type, trainer.precision) == ("cpu", "fp32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(masam.precision.torch.cuda, "get_device_capability", lambda d=None: (8, 0))
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    trainer = Trainer(config, progress=False)
    trainer._setup_processes()
    assert (trainer.device.type, trainer.precision, trainer.dtype) == ("cuda", "fp16", torch.float16)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    trainer.model = torch.nn.Linear(2, 2)
    trainer._setup_optimiser()
    assert isinstance(trainer.scaler, torch.amp.GradScaler)


@pytest.mark.parametrize(("world", "share"), [(1, 24), (2, 12), (8, 3), (5, None)])
def test_the_presets_batch_of_24_is_the_global_batch_split_over_the_processes(monkeypatch, tmp_path, world, share):
    """Issue 24: under a torchrun of N processes each takes 24 / N stacks (the original's 3 per
    GPU x 8 GPUs); a batch that does not divide is refused, naming both numbers, before any work."""
    config = resolve_train_config(
        {"dataset": "d", "output": str(tmp_path), "arch": "vit_tiny", "device": "cpu"}, "paper"
    )
    monkeypatch.setenv("WORLD_SIZE", str(world))
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(masam.train.trainer.dist, "init_process_group", lambda *a, **k: None)
    monkeypatch.setattr(masam.train.trainer.dist, "is_initialized", lambda: False)
    trainer = Trainer(config, progress=False)
    if share is None:
        with pytest.raises(ConfigError, match=r"--batch-size 24 is the global batch .* over the 5 processes"):
            trainer._setup_processes()
        return
    trainer._setup_processes()
    assert trainer.batch == share and trainer.batch * world == 24


def test_predict_with_names_any_kept_snapshot(tmp_path):
    """Issue 24: ``--predict-with epoch:N`` designates ``model_epoch_N.safetensors``. The original
    numbers its files from 0 (``epoch_159.pth``, test.py:171, is saved after 160 epochs,
    trainer.py:122-127); masam counts the epochs done, so that file is our ``model_epoch_160``."""
    given = {"dataset": "d", "output": str(tmp_path), "arch": "vit_tiny"}
    assert resolve_train_config({**given, "predict_with": "epoch:160"}, "btcv").predict_with == "epoch:160"
    assert resolve_train_config({**given, "predict_with": "epoch:300"}, "btcv").predict_with == "epoch:300"
    for wrong, message in [
        ("epoch:150", r"keeps no such snapshot; it keeps every 20 epochs and at the last \(300\)"),
        ("epoch:320", "keeps no such snapshot"), ("epoch:x", "best, last or epoch:N"), ("first", "best, last"),
    ]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            resolve_train_config({**given, "predict_with": wrong}, "btcv")
    with pytest.raises(ConfigError, match=r"none \(--snapshot-every 0\)"):
        resolve_train_config({**given, "predict_with": "epoch:20"})
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"predict_with": "epoch:160"}}))
    for name in ("model_epoch_140", "model_epoch_160", "model_last"):
        (run / f"{name}.safetensors").write_bytes(b"")
    assert find_weights(run) == run / "model_epoch_160.safetensors"
    (run / "model_epoch_160.safetensors").unlink()
    with pytest.raises(MissingFileError, match="model_epoch_160.safetensors"):
        find_weights(run)
