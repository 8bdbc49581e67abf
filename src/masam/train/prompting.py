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
from .config import TrainConfig


def prompt_metadata(config: TrainConfig) -> dict:
    """What prediction needs to know of the run's prompts, stored in the model's metadata:
    ``prompt`` ("none", "box", "points" or "box+points"), ``box_label`` (None: boxes around all foreground),
    ``prompt_dropout`` (above 0: the model also segments without a prompt) and ``box_3d`` and
    ``box_empty`` (the shares of samples trained with a stack's 3D box, and with a box around nothing),
    ``click_rounds`` (issue 22: above 1, points are replayed as correction rounds at prediction)."""
    return {
        "prompt": config.prompt, "box_label": config.box_label, "prompt_dropout": config.prompt_dropout,
        "box_3d": config.box_3d, "box_empty": config.box_empty,
        "click_rounds": config.click_rounds if "points" in config.prompt else 0,
    }  # fmt: skip


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
    """``model(x, boxes, prompted)``: a batch where some samples have no prompt (see
    :meth:`MASAM.forward`, which holds the split so that DDP sees one forward call). ``x``
    ``[B, D, 3, S, S]``; ``boxes`` ``[B, D, 4]`` or None; ``prompted`` ``[B]`` bool (None: all)."""
    return model(x, boxes, prompted)
