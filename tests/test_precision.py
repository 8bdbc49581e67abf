"""Precision names, "auto" from the CPU's flags, and the bf16 inference copy of a model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import masam.precision as precision_module
from masam.infer import Predictor
from masam.precision import autocast, cpu_flags, cpu_has_native_bf16, prepare_for_precision, resolve_inference_precision
from tests.model.helpers import tiny_ct_model

AMD_ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512_bf16 avx512_vnni\n\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"
SAPPHIRE_RAPIDS = "processor\t: 0\nflags\t\t: avx512f amx_bf16 amx_tile amx_int8\n"


@pytest.mark.parametrize(("cpuinfo", "native"), [(AMD_ZEN4, True), (SKYLAKE, False), (SAPPHIRE_RAPIDS, True)])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, cpuinfo, native):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    flags = cpu_flags(path)
    assert "avx512f" in flags and "processor" not in flags
    assert cpu_has_native_bf16(flags) is native


def test_unreadable_cpuinfo_gives_no_flags(tmp_path):
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert not cpu_has_native_bf16(frozenset())


@pytest.mark.parametrize(("flags", "expected"), [({"avx512_bf16"}, "bf16"), ({"avx2", "avx512_vnni"}, "fp32")])
def test_auto_on_the_cpu_follows_the_flags(monkeypatch, flags, expected):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset(flags))
    assert resolve_inference_precision("auto", "cpu") == expected
    assert resolve_inference_precision("fp32", "cpu") == "fp32" and resolve_inference_precision("bf16", "cpu") == "bf16"


@pytest.mark.parametrize(("available", "bf16", "expected"), [(True, True, "bf16"), (True, False, "fp32")])
def test_auto_on_cuda_asks_the_gpu(monkeypatch, available, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_inference_precision("auto", "cuda") == expected


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, fp16, got 'int4'"):
        resolve_inference_precision("int4", "cpu")


@pytest.fixture(scope="module")
def model():
    return tiny_ct_model()


def test_prepared_copy_matches_autocast_and_leaves_the_model_alone(model):
    x = torch.rand(1, 5, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prepared = prepare_for_precision(model, "bf16")
    assert prepare_for_precision(model, "fp32") is model
    assert all(torch.equal(v, model.state_dict()[k]) and v.dtype == torch.float32 for k, v in before.items())
    enc = prepared.image_encoder
    assert enc.blocks[0].mlp.lin1.weight.dtype == torch.bfloat16 and enc.patch_embed.proj.weight.dtype == torch.bfloat16
    assert enc.blocks[0].norm1.weight.dtype == torch.float32 and enc.pos_embed.dtype == torch.float32
    assert enc.blocks[0].norm1.weight is model.image_encoder.blocks[0].norm1.weight  # shared, not copied
    with torch.no_grad(), autocast("bf16"):
        ours, plain = prepared(x)["logits"].float(), model(x)["logits"].float()
    with torch.no_grad():
        exact = model(x)["logits"]
    # the same bf16 arithmetic as autocast, up to FacT's fold from rounded factors; bf16 really ran
    scale = exact.abs().max()
    assert (ours - plain).abs().max() <= 0.05 * scale and (ours - exact).abs().max() <= 0.1 * scale
    assert (ours - exact).abs().max() > 1e-4 * scale


def test_predictor_resolves_auto_and_keeps_the_callers_model(model, monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    predictor = Predictor(model, precision="auto")
    assert predictor.precision == "bf16" and predictor.model is not model
    assert predictor.model.image_encoder.blocks[1].attn.proj.weight.dtype == torch.bfloat16
    assert model.image_encoder.blocks[1].attn.proj.weight.dtype == torch.float32
    volume = torch.rand(6, 40, 40).mul(400).sub(200).numpy()
    ours = predictor.predict(volume, return_probabilities=True).probabilities.astype(np.float32)
    exact = Predictor(model, precision="fp32").predict(volume, return_probabilities=True).probabilities
    difference = np.abs(ours - exact.astype(np.float32)).max()
    assert ours.shape == (3, 6, 40, 40) and 0 < difference < 0.01
    monkeypatch.setattr(precision_module, "cpu_flags", lambda: frozenset({"avx2"}))
    assert Predictor(model, precision="auto").model is model
