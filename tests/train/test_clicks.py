"""Simulated clicks (issue 22): the sampler against a brute-force computation, the correction
rounds of the model's forward pass, and a short training with clicks whose settings the model's
metadata keeps for prediction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from masam.model.correction import mask_prompt
from masam.train.clicks import FIRST_CLICK_DEPTH, SimulatedClicks, correction_click, first_click
from tests.model.helpers import randomise, tiny


def brute_depth(region: np.ndarray) -> np.ndarray:
    """Distance of each region pixel to the nearest pixel outside it, written out: every pixel
    outside the region and the ring just outside the image are candidates."""
    h, w = region.shape
    outside = [(r, c) for r in range(-1, h + 1) for c in range(-1, w + 1)
               if not (0 <= r < h and 0 <= c < w) or not region[r, c]]  # fmt: skip
    out = np.zeros((h, w))
    for r, c in zip(*np.nonzero(region), strict=True):
        out[r, c] = min(math.hypot(r - a, c - b) for a, b in outside)
    return out


def components(mask: np.ndarray) -> list[set]:
    """4-connected components by flood fill."""
    seen, out = set(), []
    for start in zip(*np.nonzero(mask), strict=True):
        if start in seen:
            continue
        todo, part = [start], set()
        while todo:
            r, c = todo.pop()
            if (r, c) in seen or not (0 <= r < mask.shape[0] and 0 <= c < mask.shape[1]) or not mask[r, c]:
                continue
            seen.add((r, c))
            part.add((r, c))
            todo += [(r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)]
        out.append(part)
    return out


def blobs(rng, shape=(18, 22), count=3) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    mask = np.zeros(shape, bool)
    for _ in range(count):
        r, c, a, b = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(2, 6), rng.uniform(2, 6)
        mask |= ((rows - r) / a) ** 2 + ((cols - c) / b) ** 2 <= 1
    return mask


@pytest.mark.parametrize("seed", range(6))
def test_the_correction_click_is_the_deepest_point_of_the_largest_error(seed):
    rng = np.random.default_rng(seed)
    target, prediction = blobs(rng), blobs(rng)
    x, y, label = correction_click(prediction, target)
    error = prediction != target
    largest = max(components(error), key=len)
    region = np.zeros_like(error)
    region[tuple(np.array(sorted(largest)).T)] = True
    depth = brute_depth(region)
    assert region[int(y), int(x)] and math.isclose(depth[int(y), int(x)], depth.max())
    assert label == int(target[int(y), int(x)])  # a missed target pixel: include; else exclude
    assert correction_click(target, target) is None


def test_first_clicks_lie_inside_the_target_away_from_its_border():
    rng = np.random.default_rng(0)
    target = blobs(rng, count=2)
    depth = brute_depth(target)
    seen = set()
    for _ in range(200):
        x, y, label = first_click(target, rng)
        assert label == 1 and depth[int(y), int(x)] >= FIRST_CLICK_DEPTH * depth.max() - 1e-9
        seen.add((x, y))
    assert len(seen) > 3  # drawn, not always the centre
    x, y, label = first_click(np.zeros((5, 6), bool), rng)
    assert label == 0 and 0 <= x < 6 and 0 <= y < 5


def test_the_rounds_add_one_click_each_and_feed_the_last_prediction_back():
    torch.manual_seed(0)
    model = randomise(tiny(num_classes=2)).eval()
    x = torch.rand(2, 3, 3, 64, 64)
    target = torch.zeros(2, 3, 64, 64, dtype=torch.bool)
    target[:, :, 20:40, 18:44] = True
    clicks = SimulatedClicks(target, 3, 2, torch.tensor([True, False]), True, np.random.default_rng(0))
    given = []
    first, following = clicks.first, clicks.next
    clicks.first = lambda: given.append(first()) or given[-1]
    clicks.next = lambda logits: given.append(following(logits)) or given[-1]
    with torch.no_grad():
        out = model(x, None, torch.tensor([True, False]), clicks)
        emb = model.encode(x)
    assert len(out["rounds"]) == 3 and torch.equal(out["logits"], out["rounds"][-1])
    assert (given[0][0, :, 0, 2] == 1).all() and (given[0][1] == -1).all()  # round 0: sample 1 is unprompted
    points = torch.cat(given, 2).flatten(0, 1)  # [6, 3, 3]: three clicks on every slice of sample 0
    with torch.no_grad():
        previous = out["rounds"][1].flatten(0, 1)
        masks = mask_prompt(previous, 2, model.prompt_encoder.mask_input_size)
        expected, _ = model.decode_rows(emb, None, points, masks)
        automatic, _ = model.decode_rows(emb[3:])
    assert torch.allclose(out["rounds"][2].flatten(0, 1), expected, atol=1e-5)
    assert torch.allclose(out["rounds"][0][1], automatic, atol=1e-5)


def test_training_with_clicks_runs_and_its_settings_reach_prediction(tmp_path, capsys):
    from masam.cli import main
    from masam.infer import Predictor
    from tests.data.helpers import make_dataset

    dataset = make_dataset(tmp_path / "D", cases=2, shape=(5, 24, 24))
    args = ["train", "-d", str(dataset), "--arch", "vit_tiny", "--image-size", "32", "--rank", "2", "--workers", "0",
            "--quiet", "--iterations", "2", "--batch-size", "2", "--val-every", "0", "--val-fraction", "0"]  # fmt: skip
    assert main([*args, "-o", str(tmp_path / "a"), "--prompt", "points", "--box-3d", "0.5"]) == 1
    assert "--box-3d and --box-empty need --prompt box or box+points" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "a"), "--prompt", "points", "--click-rounds", "0"]) == 1
    for mode in ("points", "box+points"):
        run = tmp_path / mode.replace("+", "_")
        flags = ["--prompt", mode, "--box-label", "1", "--prompt-dropout", "0.5", "--click-rounds", "3"]
        assert main([*args, "-o", str(run), *flags]) == 0
        losses = [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if "loss" in r]
        assert losses and all(np.isfinite(losses))
        predictor = Predictor.from_files(run)
        meta = predictor.model.metadata
        assert [meta[k] for k in ("prompt", "box_label", "prompt_dropout", "click_rounds")] == [mode, 1, 0.5, 3]
        assert predictor.click_feedback and predictor.segments_unprompted



def test_the_3d_error_point_is_the_deepest_of_the_largest_3d_region():
    from masam.train.clicks import largest_error_point

    zz, yy, xx = np.mgrid[:7, :12, :13]
    target = ((zz - 3) / 3) ** 2 + ((yy - 6) / 4) ** 2 + ((xx - 5) / 4) ** 2 <= 1
    prediction = target.copy()
    prediction[:, :, 6:] = False  # misses half the target: one large error region
    prediction[0, 0, 0] = True  # and one false positive voxel
    (z, y, x), label = largest_error_point(prediction, target)
    region = target & ~prediction
    outside = np.argwhere(~np.pad(region, 1)) - 1  # every voxel outside, the ring around the image included

    def depth(point):
        return np.sqrt(((outside - np.array(point)) ** 2).sum(1)).min()

    best = max(depth(p) for p in zip(*np.nonzero(region), strict=True))
    assert region[z, y, x] and label == 1 and math.isclose(depth((z, y, x)), best)
