"""Ensembles: the mean of the models' probabilities, saved-file ensembling, compatibility errors."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import masam
from masam.data import Normalization
from masam.infer import Predictor
from masam.infer.ensemble import (
    EnsembleError,
    average_probabilities,
    ensemble_folders,
    ensemble_probability_files,
    mean_probs_fn,
    model_spec,
    read_probabilities,
    refuse_incompatible,
    volume_probs_fn,
)
from masam.model import ModelConfig
from tests.model.helpers import randomise

GEOMETRY = {"spacing": (0.8, 0.8, 2.5), "origin": (-10.0, 5.0, 30.0), "direction": (1, 0, 0, 0, -1, 0, 0, 0, 1)}


def tiny_model(seed: int, num_classes: int = 2):
    torch.manual_seed(seed)
    model = masam.load_model(arch="vit_tiny", num_classes=num_classes, image_size=64, rank=4)
    gen = torch.Generator().manual_seed(seed)
    randomise(model)
    with torch.no_grad():  # a different model per seed
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    model.metadata = {"normalization": Normalization("CT").to_dict()}
    return model.eval()


def save_probs(path, probs, geometry=GEOMETRY):
    np.savez_compressed(path, probabilities=probs.astype(np.float16), **{k: np.asarray(v) for k, v in geometry.items()})
    return path


def random_probs(seed, shape=(3, 4, 6, 5)):
    logits = np.random.default_rng(seed).normal(size=shape)
    e = np.exp(logits)
    return e / e.sum(0, keepdims=True)


def test_two_models_ensemble_is_the_mean_of_their_probabilities():
    a, b = tiny_model(1), tiny_model(2)
    slices = torch.rand(6, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    fa, fb = volume_probs_fn(Predictor(a, batch_size=6)), volume_probs_fn(Predictor(b, batch_size=6))
    pa, pb = fa(slices), fb(slices)
    assert pa.shape == (6, 3, 64, 64) and not torch.allclose(pa, pb, atol=1e-3)
    ours = mean_probs_fn([fa, fb])(slices)
    assert torch.allclose(ours, (pa + pb) / 2, atol=1e-6)
    assert torch.allclose(ours.sum(1), torch.ones(6, 64, 64), atol=1e-5)
    refuse_incompatible({"a": model_spec(a), "b": model_spec(b)})


def spec_only(num_classes=2, modality="CT", **kw):
    """What model_spec reads of a model, without building one."""
    config = ModelConfig("vit_tiny", 64, num_classes, rank=4, **kw)
    metadata = {"normalization": Normalization(modality).to_dict()}
    return SimpleNamespace(config=config, metadata=metadata, input_spec=None)


def test_incompatible_models_are_a_clear_error():
    a, b = spec_only(), spec_only(num_classes=3)
    with pytest.raises(EnsembleError, match=r"^runB: classes 3 differ from runA's 2"):
        refuse_incompatible({"runA": model_spec(a), "runB": model_spec(b)})
    c = spec_only(modality="MRI")
    with pytest.raises(EnsembleError, match=r"runC: input .*MRI.* differ from runA's .*CT"):
        refuse_incompatible({"runA": model_spec(a), "runC": model_spec(c)})
    with pytest.raises(EnsembleError, match=r"runD: input .*\"slices\": 3"):
        refuse_incompatible({"runA": model_spec(a), "runD": model_spec(spec_only(slices=3))})
    named = spec_only(label_names={"background": 0, "liver": 1, "spleen": 2})
    renamed = spec_only(label_names={"background": 0, "liver": 1, "kidney": 2})
    with pytest.raises(EnsembleError, match=r"runF: classes .*kidney"):
        refuse_incompatible({"runE": model_spec(named), "runF": model_spec(renamed)})


def test_probability_files_ensemble_equals_the_mean(tmp_path):
    p1, p2, p3 = random_probs(1), random_probs(2), random_probs(3)
    files = [save_probs(tmp_path / f"m{i}.npz", p) for i, p in enumerate((p1, p2, p3))]
    stored = [read_probabilities(f)[0].astype(np.float32) for f in files]  # what was saved, float16
    mean = (stored[0] + stored[1] + stored[2]) / 3
    out = ensemble_probability_files(files, tmp_path / "case.nii.gz", tmp_path / "case_probabilities.npz")
    image = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(image), mean.argmax(0))
    assert np.allclose(image.GetSpacing(), GEOMETRY["spacing"]) and np.allclose(image.GetOrigin(), GEOMETRY["origin"])
    assert np.allclose(image.GetDirection(), GEOMETRY["direction"])
    saved, geometry = read_probabilities(tmp_path / "case_probabilities.npz")
    assert saved.dtype == np.float16 and np.allclose(saved, mean, atol=1e-3)
    assert geometry["spacing"] == GEOMETRY["spacing"]
    assert np.allclose(average_probabilities(stored), mean, atol=1e-7)


def test_ensemble_folders_like_nnunet(tmp_path):
    dirs = [tmp_path / "fold0", tmp_path / "fold1"]
    for i, d in enumerate(dirs):
        d.mkdir()
        for case in ("c1", "c2"):
            save_probs(d / f"{case}_probabilities.npz", random_probs(10 * i + len(case) + int(case[1])))
    written = ensemble_folders(dirs, tmp_path / "ens")
    assert [p.name for p in written] == ["c1.nii.gz", "c2.nii.gz"]
    for case, path in zip(("c1", "c2"), written):
        probs = [read_probabilities(d / f"{case}_probabilities.npz")[0].astype(np.float32) for d in dirs]
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), ((probs[0] + probs[1]) / 2).argmax(0))
    (dirs[1] / "c2_probabilities.npz").unlink()
    with pytest.raises(EnsembleError, match=r"fold1: cases differ from .*fold0's \(c2\)"):
        ensemble_folders(dirs, tmp_path / "ens2")


def test_disagreeing_files_are_clear_errors(tmp_path):
    a = save_probs(tmp_path / "a.npz", random_probs(1))
    more_classes = save_probs(tmp_path / "b.npz", random_probs(2, (4, 4, 6, 5)))
    other_shape = save_probs(tmp_path / "c.npz", random_probs(2, (3, 4, 6, 6)))
    moved = save_probs(tmp_path / "d.npz", random_probs(2), {**GEOMETRY, "origin": (0.0, 0.0, 0.0)})
    with pytest.raises(EnsembleError, match=r"b.npz: probabilities of shape \[4, 4, 6, 5\] differ in classes"):
        ensemble_probability_files([a, more_classes], tmp_path / "x.nii.gz")
    with pytest.raises(EnsembleError, match=r"c.npz: .* differ in shape"):
        ensemble_probability_files([a, other_shape], tmp_path / "x.nii.gz")
    with pytest.raises(EnsembleError, match=r"d.npz: geometry"):
        ensemble_probability_files([a, moved], tmp_path / "x.nii.gz")
    np.savez(tmp_path / "e.npz", labels=np.zeros(3))
    with pytest.raises(EnsembleError, match=r"e.npz: not a masam probability file"):
        ensemble_probability_files([a, tmp_path / "e.npz"], tmp_path / "x.nii.gz")
    assert not (tmp_path / "x.nii.gz").exists()
