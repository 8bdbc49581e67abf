"""Shared test helpers: tiny SAM checkpoints in the official layout, original MA-SAM files, and the
interoperability fixture from ../shared."""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from masam.model import ModelConfig, build_model
from masam.model.masam import parameter_group

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASAM_SHARED", ROOT.parent / "shared"))
INTEROP = SHARED / "fixtures" / "masam_interop"


def require_shared(path: Path) -> Path:
    """The path under ../shared; CI must have it, elsewhere its absence skips the test."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must run with ../shared beside the checkout")
        pytest.skip(f"{path} not present")
    return path


@contextlib.contextmanager
def benchmark_modules(*names: str):
    """Scripts of ``benchmarks/`` imported as modules, their folder on the path while in use."""
    folder = str(ROOT / "benchmarks")
    sys.path.insert(0, folder)
    try:
        yield tuple(importlib.import_module(name) for name in names)
    finally:
        sys.path.remove(folder)


def official_sam_state(arch: str, image_size: int, seed: int = 0, num_mask_tokens: int = 4) -> dict[str, torch.Tensor]:
    """Random values in the official SAM layout for ``arch`` at ``image_size`` (SAM's own is 1024):
    no MA-SAM additions, SAM's two-stage upscaling and 32-wide hypernetwork outputs."""
    model = build_model(ModelConfig(arch, image_size, num_classes=num_mask_tokens - 1, rank=4))
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in model.state_dict().items():
        group = parameter_group(key)
        if group in ("fact", "adapters") or key.startswith(
            tuple(f"mask_decoder.output_upscaling.{i}." for i in (4, 6, 7, 9))
        ):
            continue
        if key.startswith("mask_decoder.output_hypernetworks_mlps.") and ".layers.2." in key:
            value = torch.empty((32, 256) if key.endswith("weight") else (32,))
        tensor = torch.randn(value.shape, generator=gen) * 0.02
        if key.endswith(".weight") and value.ndim == 1:  # norms
            tensor += 1.0
        state[key] = tensor
    return state


def original_adapter_state(
    sam_state: dict[str, torch.Tensor], rank: int, num_classes: int, width: int = 384, seed: int = 1
) -> dict[str, torch.Tensor]:
    """Random fine-tuned tensors in the layout the original MA-SAM ``save_parameters`` writes, keys in
    a shuffled order."""
    gen = torch.Generator().manual_seed(seed)
    dim = sam_state["image_encoder.patch_embed.proj.weight"].shape[0]
    depth = 1 + max(int(k.split(".")[2]) for k in sam_state if k.startswith("image_encoder.blocks."))

    def rnd(*shape, plus=0.0):
        return torch.randn(shape, generator=gen) * 0.02 + plus

    out = {f"{qv}_FacTs_{i:03d}": rnd(rank, rank) for qv in "qv" for i in range(depth)}
    out["image_encoder.FacTu.weight"] = rnd(rank, dim)
    out["image_encoder.FacTv.weight"] = rnd(dim, rank)
    for i in range(depth):
        p = f"image_encoder.ImageEncoderViT.blocks.{i}.Block.adapter_"
        for s in ("", "_2"):
            out[f"{p}norm{s}.weight"] = rnd(dim, plus=1.0)
            out[f"{p}norm{s}.bias"] = rnd(dim)
            out[f"{p}linear_down{s}.weight"] = rnd(width, dim)
            out[f"{p}linear_up{s}.weight"] = rnd(dim, width)
            out[f"{p}conv{s}.weight"] = rnd(width, width, 3, 1, 1)
            out[f"{p}conv{s}.bias"] = rnd(width)
    model = build_model(ModelConfig("vit_b" if dim == 768 else "vit_tiny", 256, num_classes, rank))
    for key, value in model.state_dict().items():
        if key.startswith(("prompt_encoder.", "mask_decoder.")):
            plus = 1.0 if (key.endswith(".weight") and value.ndim == 1) else 0.0
            out[key] = rnd(*value.shape, plus=plus)
    out["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = sam_state[
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
    ].clone()
    keys = list(out)
    random.Random(seed).shuffle(keys)
    return {k: out[k] for k in keys}


@pytest.fixture(scope="session")
def interop_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """The fixture's SAM ViT-B and original MA-SAM files, regenerated into a temporary folder."""
    folder = require_shared(INTEROP)
    out = tmp_path_factory.mktemp("interop")
    sam, adapter = out / "sam_vit_b_random.pth", out / "masam_adapter.pth"
    subprocess.run(
        [sys.executable, str(folder / "gen_sam_ckpt.py"), "--out", str(sam)], check=True, capture_output=True
    )
    subprocess.run(
        [sys.executable, str(folder / "gen_masam_adapter.py"), "--sam", str(sam), "--out", str(adapter)],
        check=True,
        capture_output=True,
    )
    return sam, adapter


@pytest.fixture(autouse=True)
def _two_threads():
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _quiet_machine(monkeypatch):
    """Commands warn when the load average shows busy cores (issue 28); tests that count output
    lines must not depend on what else runs on the machine. ``masam`` also sets OMP_NUM_THREADS
    for its child processes: undone after each test."""
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    if "OMP_NUM_THREADS" in os.environ:
        monkeypatch.setenv("OMP_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    else:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
