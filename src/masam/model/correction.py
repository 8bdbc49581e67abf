"""Iterative correction (issue 22): points added one round at a time, each round given the previous
round's prediction as SAM's dense mask prompt (SAM's training and interactive use; SAM-Med3D and
VISTA3D correct the same way).

One function replays the rounds for prediction (:func:`decode_rounds`), so that a prompts file with
its points in click order gives what an interactive session gives click by click; the trainer runs
the same rounds with simulated clicks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def target_log_odds(logits: torch.Tensor, label: int | None) -> torch.Tensor:
    """The target's log-odds ``[n, S, S]`` from class logits ``[n, K+1, S, S]``: class ``label``
    against all others (None: all foreground against the background)."""
    if label is None:
        return torch.logsumexp(logits[:, 1:], 1) - logits[:, 0]
    others = torch.cat([logits[:, :label], logits[:, label + 1 :]], 1)
    return logits[:, label] - torch.logsumexp(others, 1)


def mask_prompt(logits: torch.Tensor, label: int | None, size: tuple[int, int]) -> torch.Tensor:
    """The dense mask prompt ``[n, 1, *size]`` (the prompt encoder's mask input, a quarter of the
    image size) of a prediction's logits ``[n, K+1, S, S]``: the target's log-odds, area-averaged."""
    return F.interpolate(target_log_odds(logits.float(), label)[:, None], size=size, mode="area")


def decode_rounds(
    model: torch.nn.Module,  # a MASAM (not imported: masam.py imports this module)
    embeddings: torch.Tensor,
    boxes: torch.Tensor | None,
    points: torch.Tensor | None,
    label: int | None,
    feedback: bool = True,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``[n, K+1, S, S]`` of ``n`` slices ``[n, 256, h, w]`` with their boxes ``[n, 4]`` and
    points ``[n, N, 3]`` in click order (see :meth:`MASAM.decode_rows`).

    With ``feedback`` (a model trained with correction rounds): round 0 is the box alone (or
    ``start`` ``[n, K+1, S, S]``, a starting prediction such as the automatic one; NaN rows: none);
    round ``r`` gives a slice its box, its first ``r`` points and round ``r - 1``'s prediction as the
    mask prompt (none after an empty round 0). A slice without points keeps round 0. Without
    ``feedback``: one round with all points at once."""
    n = embeddings.shape[0]
    if points is None or not feedback:
        return model.decode_rows(embeddings, boxes, points)[0]
    count = (points[..., 2] >= 0).sum(-1)
    has_box = torch.isfinite(boxes).all(-1) if boxes is not None else torch.zeros(n, dtype=bool, device=count.device)
    has_start = torch.isfinite(start).flatten(1).all(-1) if start is not None else torch.zeros_like(has_box)
    has_start = has_start & ~has_box
    previous = None
    first = (count == 0) | has_box
    if bool(first.any()):
        rows = first.nonzero().flatten()
        part = model.decode_rows(embeddings[rows], None if boxes is None else boxes[rows])[0].float()
        previous = part.new_full((n, *part.shape[1:]), float("nan"))
        previous[rows] = part
    if bool(has_start.any()):
        start = start.to(embeddings.device).float()
        previous = start.clone() if previous is None else previous
        previous[has_start] = start[has_start]
    size = model.prompt_encoder.mask_input_size
    for r in range(1, int(count.max()) + 1):
        rows = (count >= r).nonzero().flatten()
        masks = None
        if previous is not None:
            masks = mask_prompt(torch.nan_to_num(previous[rows], nan=0.0), label, size)
            masks[~torch.isfinite(previous[rows]).flatten(1).all(-1)] = float("nan")
        part = model.decode_rows(
            embeddings[rows], None if boxes is None else boxes[rows], points[rows, :r], masks
        )[0].float()
        if previous is None:
            previous = part.new_full((n, *part.shape[1:]), float("nan"))
        previous[rows] = part
    return previous
