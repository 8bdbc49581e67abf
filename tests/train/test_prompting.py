"""Training with prompts: boxes around one class, prompt dropout, and batches that mix prompted
and unprompted samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from masam.train.prompting import box_target, forward_with_prompts, prompt_keep
from masam.train.trainer import boxes_for_training, with_empty_boxes, with_stack_boxes
from tests.model.helpers import randomise, tiny


def test_boxes_for_one_class_surround_that_class_only():
    label = torch.zeros(2, 3, 20, 24, dtype=torch.long)
    label[0, :, 2:16, 3:20] = 1  # organ
    label[0, 1, 6:9, 10:14] = 2  # lesion inside it, on one slice
    label[1, 2, 12:18, 1:5] = 2
    boxes = boxes_for_training(box_target(label, 2), torch.Generator().manual_seed(0), jitter=0.0)
    expected = torch.full((2, 3, 4), float("nan"))
    expected[0, 1] = torch.tensor([10.0, 6.0, 13.0, 8.0])  # x0, y0, x1, y1, inclusive
    expected[1, 2] = torch.tensor([1.0, 12.0, 4.0, 17.0])
    assert torch.equal(boxes.isnan(), expected.isnan())
    # boxes_for_training moves each side by up to 1 pixel even at jitter 0
    assert (boxes.nan_to_num(-1) - expected.nan_to_num(-1)).abs().max() <= 1
    everything = boxes_for_training(box_target(label, None), torch.Generator().manual_seed(0), jitter=0.0)
    assert (everything[0, 1] - torch.tensor([3.0, 2.0, 19.0, 15.0])).abs().max() <= 1  # organ + lesion
    assert box_target(label, None).dtype == torch.uint8 and box_target(label, 2).sum() == 12 + 24


def test_a_stack_box_covers_the_target_on_every_slice_and_boxes_empty_slices_too():
    target = torch.zeros(400, 5, 20, 24, dtype=torch.uint8)
    target[:, 1, 6:9, 10:14] = 1  # small at one end of the lesion
    target[:, 2, 4:12, 8:18] = 1  # largest in the middle
    target[:, 3:, :, :] = 0  # slices 0, 3 and 4 hold none of it
    target[-1] = 0  # a sample without the target keeps its NaN boxes
    gen = torch.Generator().manual_seed(0)
    per_slice = boxes_for_training(target, gen, jitter=0.0)
    mixed = with_stack_boxes(per_slice, target, 0.5, 0.0, gen)
    whole = mixed[:, 0].isfinite().all(1)  # the 3D-box samples: slice 0 (empty) got a box
    assert abs(whole[:-1].float().mean().item() - 0.5) < 0.1  # binomial sd 0.025
    box = mixed[whole]
    assert torch.equal(box, box[:, :1].expand_as(box))  # one box for the whole stack
    assert (box[0, 0] - torch.tensor([8.0, 4.0, 17.0, 11.0])).abs().max() <= 1  # around slices 1 and 2
    assert torch.equal(mixed[~whole].nan_to_num(-1), per_slice[~whole].nan_to_num(-1))  # the others: per-slice
    assert mixed[-1].isnan().all()
    assert torch.equal(with_stack_boxes(per_slice, target, 0.0, 0.0, gen).nan_to_num(-1), per_slice.nan_to_num(-1))


def test_an_empty_stack_borrows_another_samples_box_and_only_then():
    target = torch.zeros(600, 5, 20, 24, dtype=torch.uint8)
    target[::3, 1:3, 6:9, 10:14] = 1  # a third of the samples hold the target
    gen = torch.Generator().manual_seed(0)
    per_slice = boxes_for_training(target, gen, jitter=0.0)
    mixed = with_empty_boxes(per_slice, target, 0.5, 0.0, gen)
    empty = target.flatten(1).amax(1) == 0
    given = mixed[:, 0].isfinite().all(1) & empty
    assert abs(given.float().sum().item() / empty.sum().item() - 0.5) < 0.1  # binomial sd 0.025
    box = mixed[given]
    assert torch.equal(box, box[:, :1].expand_as(box))  # one box for the whole stack
    assert (box[:, 0] - torch.tensor([10.0, 6.0, 13.0, 8.0])).abs().max() <= 1  # the donors' box
    kept = ~given  # samples with the target, and the empty ones not chosen, are unchanged
    assert torch.equal(mixed[kept].nan_to_num(-1), per_slice[kept].nan_to_num(-1))
    none = torch.zeros(4, 5, 20, 24, dtype=torch.uint8)  # no donor in the batch: nothing to borrow
    unboxed = boxes_for_training(none, gen, 0.0)
    assert with_empty_boxes(unboxed, none, 1.0, 0.0, gen).isnan().all()


def test_prompt_dropout_leaves_out_the_expected_share_reproducibly():
    keep = prompt_keep(20000, 0.3, torch.Generator().manual_seed(5))
    assert abs((~keep).float().mean().item() - 0.3) < 0.015  # binomial sd 0.0032
    assert torch.equal(keep, prompt_keep(20000, 0.3, torch.Generator().manual_seed(5)))
    assert prompt_keep(50, 0.0, torch.Generator()).all() and not prompt_keep(50, 1.0, torch.Generator()).any()
    with pytest.raises(ValueError, match="between 0 and 1"):
        prompt_keep(4, 1.5, torch.Generator())


@pytest.fixture(scope="module")
def model():
    return randomise(tiny(num_classes=2)).eval()


def test_a_mixed_batch_equals_prompted_and_unprompted_runs(model):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 3, 64, 64, generator=gen)
    boxes = torch.tensor([[10.0, 12.0, 40.0, 50.0]]).repeat(3, 2, 1)
    boxes[0, 1] = float("nan")  # prompted sample, no target on its second slice
    prompted = torch.tensor([True, False, True])
    with torch.no_grad():
        mixed = forward_with_prompts(model, x, boxes, prompted)
        with_box = model(x[[0, 2]], boxes[[0, 2]])
        without = model(x[[1]], None)
        all_nan = model(x[[1]], torch.full((1, 2, 4), float("nan")))
    for key in ("logits", "iou_predictions"):
        assert torch.allclose(mixed[key][[0, 2]], with_box[key], atol=1e-5)
        assert torch.allclose(mixed[key][1], without[key][0], atol=1e-5)
    # "no prompt" is not "a NaN box": the two decode differently
    assert (all_nan["logits"] - without["logits"]).abs().max() > 1e-3
    with torch.no_grad():
        assert torch.equal(forward_with_prompts(model, x, boxes, torch.ones(3, dtype=bool))["logits"],
                           model(x, boxes)["logits"])  # fmt: skip
        assert torch.equal(forward_with_prompts(model, x, boxes, torch.zeros(3, dtype=bool))["logits"],
                           model(x)["logits"])  # fmt: skip


def test_a_mixed_batch_trains_the_box_path_and_the_no_box_path(model):
    model.train()
    x = torch.rand(2, 2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[5.0, 5.0, 30.0, 30.0]]).repeat(2, 2, 1)
    out = forward_with_prompts(model, x, boxes, torch.tensor([True, False]))
    out["logits"].square().mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.eval()
    # box corner embeddings learn only from prompted samples; the image encoder from both
    assert grads["prompt_encoder.point_embeddings.2.weight"].abs().sum() > 0
    assert np.isfinite(sum(g.abs().sum().item() for g in grads.values()))
    assert any(n.startswith("image_encoder.") for n in grads)


def test_train_flags_are_checked_and_stored_in_the_models_metadata(tmp_path, capsys):
    from masam.cli import main
    from masam.model.checkpoint import load_model
    from tests.data.helpers import make_dataset

    dataset = make_dataset(tmp_path / "D", cases=2, shape=(5, 24, 24))
    args = ["train", "-d", str(dataset), "--arch", "vit_tiny", "--image-size", "32", "--rank", "2", "--workers", "0",
            "--quiet", "--iterations", "2", "--batch-size", "2", "--val-every", "0", "--val-fraction", "0"]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "a"), "--box-label", "1"]) == 1  # needs --prompt box
    assert "--box-label and --prompt-dropout need --prompt box, points or box+points" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "b"), "--prompt", "box", "--prompt-dropout", "1.0"]) == 1
    assert main([*args, "-o", str(tmp_path / "b"), "--prompt", "box", "--box-3d", "1.5"]) == 1
    assert "--box-3d must be between 0 and 1, got 1.5" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "b"), "--prompt", "box", "--box-empty", "-0.1"]) == 1
    assert "--box-empty must be between 0 and 1, got -0.1" in capsys.readouterr().err
    run = tmp_path / "c"
    flags = ["--prompt", "box", "--box-label", "1", "--prompt-dropout", "0.5", "--box-3d", "0.5", "--box-empty", "0.25"]
    assert main([*args, "-o", str(run), *flags]) == 0
    meta = load_model(weights=run / "model_last.safetensors").metadata
    stored = [meta[k] for k in ("prompt", "box_label", "prompt_dropout", "box_3d", "box_empty")]
    assert stored == ["box", 1, 0.5, 0.5, 0.25]
