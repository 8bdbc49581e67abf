"""Box prompts in training: which class the boxes are drawn around (``--box-label``), and prompt
dropout (``--prompt-dropout``), so that one model segments without a prompt and refines with one.

"No prompt" is not "a NaN box". A NaN box row tells the model that the slice is prompted and holds
no target (the per-slice protocol: a box on every slice with the target, none elsewhere); the
prompt encoder turns it into two not-a-point tokens. A sample left unprompted is decoded with no
prompt tokens at all, exactly as a model trained without prompts and as ``Predictor.predict``
without boxes (``boxes=None``). :func:`forward_with_prompts` runs one batch that mixes both.
"""

from __future__ import annotations

import torch

from ..model.masam import MASAM


def box_target(label: torch.Tensor, box_label: int | None) -> torch.Tensor:
    """What the boxes are drawn around: ``label`` ``[B, D, H, W]`` class indices -> the same shape,
    1 on class ``box_label`` (None: on all foreground, the original's choice), 0 elsewhere."""
    target = label > 0 if box_label is None else label == box_label
    return target.to(torch.uint8)


def prompt_keep(batch: int, dropout: float, generator: torch.Generator) -> torch.Tensor:
    """Which samples keep their box prompts: ``[batch]`` bool, each False with probability
    ``dropout`` (drawn from ``generator``, so a resumed run draws the same)."""
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"prompt dropout must be between 0 and 1, got {dropout}")
    return torch.rand(batch, generator=generator) >= dropout


def forward_with_prompts(
    model: MASAM, x: torch.Tensor, boxes: torch.Tensor | None, prompted: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """``model(x, boxes)`` for a batch where some samples have no prompt.

    ``x`` ``[B, D, 3, S, S]``; ``boxes`` ``[B, D, 4]`` (NaN rows: prompted, no target on that
    slice) or None; ``prompted`` ``[B]`` bool (None: all). The encoder runs once for the whole
    batch; the prompted samples are decoded with their boxes and the others with no prompt tokens
    (the mask decoder works per slice, so splitting the batch changes nothing else). Returns
    ``model.forward``'s dict in the batch's order."""
    if boxes is None or prompted is None or bool(prompted.all()):
        return model(x, boxes)
    if not bool(prompted.any()):
        return model(x, None)
    b, d = x.shape[:2]
    embeddings = model.encode(x)
    per_sample = embeddings.reshape(b, d, *embeddings.shape[1:])
    keep = prompted.to(x.device)
    with_box = model.decode(per_sample[keep].flatten(0, 1), int(keep.sum()), boxes[keep])
    without = model.decode(per_sample[~keep].flatten(0, 1), int((~keep).sum()), None)
    out = {}
    for key in with_box:
        merged = with_box[key].new_empty((b, *with_box[key].shape[1:]))
        merged[keep] = with_box[key]
        merged[~keep] = without[key]
        out[key] = merged
    return out
