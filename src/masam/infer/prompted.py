"""Prompted prediction with one model: the automatic result everywhere, and the boxed target class
refined inside the prompt's region. :meth:`Predictor.predict` (``boxes=prompt``) calls these; the
predictor is imported for annotations only, so that it can import this module."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..data.io import Volume, slice_axis
from ..data.slices import labels_from_slices, prepare_image, stack_indices, to_slices
from .boxes import (
    Prompt,
    PropagatedBox,
    box_region,
    grow_box,
    mask_box,
    prompt_region,
    propagate_from_slice,
    slice_boxes,
    slice_prompts,
)

if TYPE_CHECKING:
    from .predictor import Predictor


def model_slice_probabilities(predictor: Predictor, volume: Volume) -> Callable[[int, list[float]], torch.Tensor]:
    """``probabilities(index, box) -> [K+1, rows, cols]``: the model's softmax on slice ``index``
    (along the predictor's slice axis) given ``box`` (x0, y0, x1, y1 in the slice's voxels).

    One forward pass of the stack centred on the slice. Only the centre slice gets the box: the
    mask decoder works slice by slice, so the other slices' boxes cannot change the centre's output."""
    slices, axis = prepare_image(volume, predictor.normalization, predictor.model.image_size)
    size = predictor.model.image_size
    rows, cols = to_slices(volume, axis)[0].shape[-2:]
    scale = torch.tensor([size / cols, size / rows, size / cols, size / rows])
    n, depth = slices.shape[0], predictor.slices

    def probabilities(index: int, box: list[float]) -> torch.Tensor:
        stack = slices[torch.from_numpy(stack_indices(n, index, depth))][None]  # [1, D, C, S, S]
        if stack.shape[2] == 1:
            stack = stack.expand(-1, -1, 3, -1, -1)
        boxes = torch.full((1, depth, 4), float("nan"))
        boxes[0, depth // 2] = torch.tensor(box, dtype=torch.float32) * scale
        probs = predictor.forward_stacks(stack.float(), boxes)[0, depth // 2]  # [K+1, S, S]
        if (rows, cols) != (size, size):
            probs = F.interpolate(probs[None], size=(rows, cols), mode="bilinear", align_corners=False)[0]
        return probs

    return probabilities


def model_slice_predictor(
    predictor: Predictor, volume: Volume, label: int | None
) -> Callable[[int, list[float]], np.ndarray]:
    """``predict_slice(index, box) -> [rows, cols]`` bool for :func:`propagate_from_slice`: where
    the model, given ``box`` on slice ``index``, predicts class ``label`` (None: any foreground)
    (:func:`model_slice_probabilities`)."""
    probabilities = model_slice_probabilities(predictor, volume)
    if label is None:
        return lambda index, box: (probabilities(index, box).argmax(0) > 0).cpu().numpy()
    return lambda index, box: (probabilities(index, box).argmax(0) == label).cpu().numpy()


def propagate(
    predictor: Predictor, volume: Volume, prompt: PropagatedBox, label: int | None, margin: float, where: str
) -> tuple[np.ndarray, dict[int, list[float]]]:
    """The target walked from ``prompt``'s slice (:func:`propagate_from_slice`): its mask
    ``[slices, rows, cols]`` along the predictor's slice axis and the box (grown by ``margin``)
    of each slice it reaches."""
    axis = slice_axis(volume)
    start = slice_boxes(prompt, volume, axis, where)
    n = to_slices(volume, axis)[0].shape[0]
    predict_slice = model_slice_predictor(predictor, volume, label)
    mask = propagate_from_slice(predict_slice, n, prompt.slice, start[prompt.slice], margin=margin)
    grown = {i: grow_box(mask_box(m), m.shape, margin, 2.0) for i, m in enumerate(mask) if m.any()}
    return mask, grown


def prompt_boxes(
    predictor: Predictor, volume: Volume, prompt: Prompt, where: str = "box", margin: float = 0.1
) -> dict[int, list[float]]:
    """Per-slice boxes (the predictor's slice frame, voxels) of any prompt; a propagated box is
    walked with the model first, its class the model's ``box_label`` (None: any foreground)."""
    if isinstance(prompt, PropagatedBox):
        return propagate(predictor, volume, prompt, predictor.box_label, margin, where)[1]
    return slice_boxes(prompt, volume, slice_axis(volume), where)


def merge_prompted(automatic: np.ndarray, prompted: np.ndarray, label: int, region: np.ndarray) -> np.ndarray:
    """The automatic label map with class ``label`` redrawn inside ``region`` from ``prompted``.

    Inside the region, automatic ``label`` voxels are cleared (to background) and the prompted
    ``label`` voxels written (over any class); everything else is the automatic result. All arrays
    share one shape; ``prompted`` may be a label map or a bool mask of the target."""
    out = automatic.copy()
    target = prompted == label if prompted.dtype != bool else prompted
    out[region & (automatic == label)] = 0
    out[region & target] = label
    return out


def predict_prompted(
    predictor: Predictor,
    volume: Volume,
    prompt: Prompt,
    label: int,
    *,
    automatic: np.ndarray | None = None,
    margin: float = 0.1,
    where: str = "box",
) -> np.ndarray:
    """The label map (the image's own array order) for ``volume`` with ``prompt`` on class ``label``.

    ``automatic``: the model's prediction without prompts (computed when None; pass an array of
    zeros for a model trained only with boxes, so that the result is the prompted target alone).
    Slice boxes, 3D boxes and points run the whole-volume prediction with them (a slice with points
    and no box is redrawn whole, :func:`masam.infer.boxes.prompt_region`); a propagated box
    walks from its slice (:func:`propagate_from_slice`). The target is then redrawn inside the
    boxes (:func:`merge_prompted`)."""
    axis = slice_axis(volume)  # the predictor's own choice (0 for video)
    if automatic is None:
        automatic = predictor.predict_volume(volume).labels
    first = to_slices(volume, axis)[0]
    shape = (first.shape[0], *first.shape[-2:])
    if not isinstance(prompt, PropagatedBox):
        boxes, points = slice_prompts(prompt, volume, axis, where)
        prompted = predictor.predict_volume(volume, boxes or None, points=points or None).labels == label
        region = prompt_region(boxes, points, shape)
    else:
        mask, grown = propagate(predictor, volume, prompt, label, margin, where)
        region = box_region(grown, shape)
        prompted = labels_from_slices(mask, axis, volume.is_video)
    region = labels_from_slices(region, axis, volume.is_video)
    return merge_prompted(automatic, prompted, label, region)
