"""Point prompts in the decoder and the correction rounds (issue 22): each slice decoded with its
own prompts as SAM's prompt encoder takes them, whatever else is in the batch; the rounds replay
the points one at a time with the previous round's prediction as the mask prompt."""

from __future__ import annotations

import torch

from masam.model.correction import decode_rounds, mask_prompt
from tests.model.helpers import randomise, tiny


def model_and_embeddings(n: int = 6, num_classes: int = 2):
    torch.manual_seed(0)
    model = randomise(tiny(num_classes=num_classes)).eval()
    with torch.no_grad():
        embeddings = model.encode(torch.rand(1, n, 3, model.image_size, model.image_size))
    return model, embeddings


def alone(model, embedding, box=None, points=None, mask=None):
    """One slice as SAM decodes it: its points (with SAM's padding point when there is no box),
    its box, its mask prompt; the logits ``[K+1, S, S]``."""
    given = {
        "points": None if points is None else (points[None, :, :2], points[None, :, 2]),
        "boxes": None if box is None else box[None],
        "masks": None if mask is None else mask[None],
    }
    sparse, dense = model.prompt_encoder(**given, batch_size=1)
    logits, _ = model.mask_decoder(embedding[None], model.prompt_encoder.get_dense_pe(), sparse, dense)
    return logits[0]


def test_each_slice_of_a_mixed_batch_is_decoded_with_its_own_prompts_only():
    model, emb = model_and_embeddings()
    nan = float("nan")
    boxes = torch.tensor([[4, 5, 20, 22], [nan] * 4, [nan] * 4, [3, 3, 9, 9], [nan] * 4, [nan] * 4])
    points = torch.full((6, 3, 3), -1.0)
    points[0, :2] = torch.tensor([[10, 12, 1], [2, 3, 0]])  # box and two points
    points[1, :1] = torch.tensor([[7, 8, 1]])  # a point, no box (NaN row: the points stand alone)
    points[4, :3] = torch.tensor([[1, 2, 1], [5, 5, 0], [30, 1, 1]])
    masks = torch.full((6, 1, *model.prompt_encoder.mask_input_size), nan)
    masks[4].normal_()
    masks[5].normal_()
    with torch.no_grad():
        got, _ = model.decode_rows(emb, boxes, points, masks)
        expected = [
            alone(model, emb[0], boxes[0], points[0, :2]),
            alone(model, emb[1], None, points[1, :1]),
            model.decode(emb[2:3], 1, boxes[2].view(1, 1, 4))["logits"][0, 0],  # NaN box: as today
            alone(model, emb[3], boxes[3]),
            alone(model, emb[4], None, points[4], masks[4]),
            alone(model, emb[5], boxes[5], None, masks[5]),  # NaN box, no points: two not-a-point tokens
        ]
    for row, want in enumerate(expected):
        assert torch.allclose(got[row], want, atol=1e-5), row


def test_the_mask_prompt_is_the_targets_log_odds_at_a_quarter_size():
    logits = torch.randn(2, 3, 16, 16)
    got = mask_prompt(logits, 2, (4, 4))
    odds = logits[:, 2] - torch.log(torch.exp(logits[:, 0]) + torch.exp(logits[:, 1]))
    assert torch.allclose(got[:, 0], odds.reshape(2, 4, 4, 4, 4).mean((2, 4)), atol=1e-5)
    foreground = torch.log(torch.exp(logits[:, 1]) + torch.exp(logits[:, 2])) - logits[:, 0]
    assert torch.allclose(mask_prompt(logits, None, (16, 16))[:, 0], foreground, atol=1e-5)


def test_the_rounds_replay_the_points_one_at_a_time_with_the_previous_prediction():
    model, emb = model_and_embeddings(3)
    nan = float("nan")
    boxes = torch.tensor([[4, 5, 20, 22], [nan] * 4, [nan] * 4])
    points = torch.full((3, 3, 3), -1.0)
    points[0] = torch.tensor([[10, 12, 1], [2, 3, 0], [25, 25, 0]])
    points[1, :2] = torch.tensor([[7, 8, 1], [9, 9, 1]])
    size = model.prompt_encoder.mask_input_size
    with torch.no_grad():
        got = decode_rounds(model, emb, boxes, points, 2)
        # slice 0: the box alone, then each point added with the last prediction as the mask
        previous = alone(model, emb[0], boxes[0])
        for r in (1, 2, 3):
            previous = alone(model, emb[0], boxes[0], points[0, :r], mask_prompt(previous[None], 2, size)[0])
        assert torch.allclose(got[0], previous, atol=1e-5)
        # slice 1: no box, so the first point has no mask; the second has the first's prediction
        first = alone(model, emb[1], None, points[1, :1])
        second = alone(model, emb[1], None, points[1, :2], mask_prompt(first[None], 2, size)[0])
        assert torch.allclose(got[1], second, atol=1e-5)
        assert torch.allclose(got[2], model.decode(emb[2:], 1, boxes[2].view(1, 1, 4))["logits"][0, 0], atol=1e-5)
        # without feedback: all points in one round
        once = decode_rounds(model, emb, boxes, points, 2, feedback=False)
        assert torch.allclose(once[0], alone(model, emb[0], boxes[0], points[0]), atol=1e-5)
