"""``masam export --format onnx`` and ``masam predict --engine onnxruntime``: the encoder and decoder
graphs give PyTorch's probabilities within a stated tolerance, with and without box prompts, and a
whole volume predicted through onnxruntime gives PyTorch's float32 label map."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from masam.cli import main
from masam.infer import Predictor
from masam.share.onnx_export import DECODER_BOXES, OnnxEngine, export_graphs
from tests.share.helpers import make_runs, tiny_model

# float32 in both, but the graphs compute attention and reductions in another order. Stated
# tolerance: logits within 1e-4 of the largest logit (measured 3e-5), argmax equal on 99.9 % of
# pixels. The volume test's model has a 10x wider decoder (to give every class); its logits reach
# 2000 and differ by up to 1e-3 of that, its label maps agree on >= 99.9 % of voxels.
LOGIT_TOLERANCE = 1e-4
ARGMAX_AGREEMENT = 0.999


def assert_close(ours, theirs):
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= LOGIT_TOLERANCE * theirs.abs().max()
    assert (ours.argmax(2) == theirs.argmax(2)).float().mean() >= ARGMAX_AGREEMENT


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graphs")
    model = tiny_model(0, decoder_spread=0.05)
    written = export_graphs(model, folder, boxes=True)
    assert [p.name for p in written] == ["encoder.onnx", "decoder.onnx", DECODER_BOXES]
    return model, OnnxEngine(folder)


def test_graphs_give_pytorchs_logits(graphs):
    model, engine = graphs
    stacks = torch.rand(3, 5, 3, 64, 64, generator=torch.Generator().manual_seed(2))  # another batch than exported
    with torch.no_grad():
        theirs = model(stacks)["logits"]
    assert theirs.shape == (3, 5, 3, 64, 64)
    assert_close(engine.logits(stacks), theirs)
    probs = Predictor(model, precision="fp32").forward_stacks(stacks, None)
    assert torch.equal(engine(stacks).argmax(2) == probs.argmax(2), engine.logits(stacks).argmax(2) == theirs.argmax(2))


def test_box_decoder_gives_pytorchs_probabilities(graphs):
    model, engine = graphs
    stacks = torch.rand(2, 5, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    boxes = torch.tensor([10.0, 12.0, 40.0, 50.0]).repeat(2, 5, 1)
    boxes[0, 1] = float("nan")  # prompted, no target on that slice
    boxes[1, 3] = torch.tensor([0.0, 0.0, 63.0, 20.0])
    with torch.no_grad():
        theirs = model(stacks, boxes)["logits"]
    assert_close(engine.logits(stacks, boxes), theirs)
    unprompted = engine.logits(stacks, None)
    assert (unprompted - theirs).abs().max() > 100 * LOGIT_TOLERANCE * theirs.abs().max()  # the prompt counts


def test_onnx_engine_predicts_the_volume_as_pytorch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MASAM_MODELS", str(tmp_path / "models"))
    runs, dataset = make_runs(tmp_path / "work")
    images = dataset / "imagesTs"
    assert main(["export", str(runs), "-o", str(tmp_path / "m.zip"), "--format", "onnx", "--name", "organs"]) == 0
    assert main(["install", str(tmp_path / "m.zip")]) == 0
    args = ["-i", str(images), "--quiet"]
    assert main(["predict", "-m", str(runs), "-o", str(tmp_path / "torch"), "--precision", "fp32", *args]) == 0
    assert main(["predict", "-m", "organs", "-o", str(tmp_path / "onnx"), "--engine", "onnxruntime", *args]) == 0
    ours, theirs = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / d / "test00.nii.gz"))) for d in ("onnx",
                                                                                                        "torch"))
    assert ours.shape == theirs.shape and (ours == theirs).mean() >= 0.999
    assert len(np.unique(theirs)) == 3  # the comparison is not between two empty maps
    capsys.readouterr()
    assert main(["export", str(runs), "-o", str(tmp_path / "plain.zip")]) == 0
    assert main(["predict", "-m", str(tmp_path / "plain.zip"), "-o", str(tmp_path / "x"), "--engine", "onnxruntime",
                 *args]) == 1  # fmt: skip
    assert "no encoder.onnx (export the model with --format onnx)" in capsys.readouterr().err
