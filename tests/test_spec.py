"""The input spec: stored in the weights file, read back by the predictor, derived for old files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import masam
from masam.data import Normalization
from masam.data.normalize import normalization_from_spec, spec_for
from masam.infer import Predictor
from masam.model.masam_format import read_weights
from masam.spec import InputSpec
from tests.conftest import official_sam_state, original_adapter_state


def test_round_trip_and_checks():
    spec = InputSpec("MRI", ("T2",), ({"modality": "MRI", "window": [-200.0, 250.0], "percentile": 98.0},), 3, 64)
    assert InputSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.convention == "masam" and spec.intensity is None
    with pytest.raises(ValueError, match="convention"):
        InputSpec(convention="nnunet")
    with pytest.raises(ValueError, match="modality"):
        InputSpec("PET")
    with pytest.raises(ValueError, match="unknown fields"):
        InputSpec.from_dict({"modality": "CT", "axes": "RAS"})
    with pytest.raises(ValueError, match="orientation must be one of masam, original"):  # issue 24
        InputSpec.from_dict({"modality": "CT", "orientation": "RAS"})
    assert InputSpec.from_dict({"modality": "CT", "orientation": "original"}).orientation == "original"


def test_the_spec_travels_in_the_weights_file_and_sets_the_predictor(tmp_path):
    model = masam.load_model(arch="vit_tiny", num_classes=2, image_size=64, rank=4)
    norm = Normalization("MRI", percentile=97.0)
    model.input_spec = spec_for(norm, ("FLAIR",), slices=5, image_size=64)
    path = tmp_path / "m.safetensors"
    masam.save_weights(model, path)
    _, header = read_weights(path)
    assert header["input_spec"]["channels"] == ["FLAIR"] and header["input_spec"]["modality"] == "MRI"
    assert header["metadata"]["normalization"] == header["input_spec"]["normalization"][0]  # older readers
    loaded = masam.load_model(weights=path)
    assert loaded.input_spec == model.input_spec
    predictor = Predictor(loaded)
    assert predictor.normalization == norm
    assert Predictor.from_files(path, modality="CT").normalization == Normalization("CT", percentile=97.0)


def test_a_file_without_a_spec_still_loads_with_one_derived(tmp_path):
    model = masam.load_model(arch="vit_tiny", num_classes=2, image_size=64, rank=4)
    model.metadata = {"normalization": Normalization("CT", window=(-100, 300)).to_dict()}
    path = tmp_path / "old.safetensors"
    masam.save_weights(model, path)
    with safe_open(str(path), "pt") as f:  # rewrite the header as masam wrote it before specs
        header = json.loads(f.metadata()["masam"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    assert "input_spec" not in header
    save_file(tensors, str(path), metadata={"masam": json.dumps(header)})
    spec = masam.load_model(weights=path).input_spec
    assert (spec.modality, spec.slices, spec.image_size, spec.convention) == ("CT", 5, 64, "masam")
    assert normalization_from_spec(spec) == Normalization("CT", window=(-100, 300))


def test_original_files_get_the_original_convention_and_read_as_ct(tmp_path):
    sam = tmp_path / "sam.pth"
    state = official_sam_state("vit_tiny", 128)
    torch.save(state, sam)
    original = tmp_path / "orig.pth"
    torch.save(original_adapter_state(state, rank=4, num_classes=2, width=24), original)
    model = masam.load_model(sam, original, image_size=64)
    assert model.input_spec.convention == "original" and model.input_spec.modality is None
    # the original code released CT loaders only, so its files are read as CT (issue 12)
    assert Predictor(model).normalization.modality == "CT"
    converted = tmp_path / "conv.safetensors"
    masam.convert_original(sam, original, converted, image_size=64)
    assert masam.load_model(sam, converted).input_spec.convention == "original"
    assert Predictor(model, normalization_from_spec(model.input_spec, "CT")).normalization.modality == "CT"
