"""Whole-volume prediction: every slice is the centre of a stack, and the softmax probabilities
of all stacks covering a slice are averaged before the argmax (the paper's aggregation).

Slices are finished as soon as every stack covering them has run, so memory stays at a few slices
of probabilities, not the whole volume.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.channels import channel_files, describe_channels, read_channels
from ..data.convention import ORIGINAL_CT, ORIGINAL_CT_BOX, turn_original, turn_original_boxes, turn_original_points
from ..data.intensity import intensity_warning
from ..data.io import Volume, read_volume, slice_axis
from ..data.normalize import ChannelNormalization, Normalization, normalization_from_spec, scale_stacks
from ..data.slices import labels_from_slices, prepare_image, stack_indices, to_slices
from ..device import free_cached_memory, is_out_of_memory, resolve_device
from ..errors import ConfigError, InputError
from ..model.checkpoint import load_model
from ..model.correction import decode_rounds
from ..model.masam import MASAM
from ..precision import autocast, prepare_for_precision, resolve_inference_precision
from ..run_folder import find_weights
from ..spec import SLICES, InputSpec
from .boxes import Box3D, Points, Prompt, PropagatedBox, SliceBoxes, parse_prompt, slice_prompts
from .original import predict_original
from .postprocess import apply_postprocessing
from .prompted import predict_prompted, prompt_boxes

# Named prediction modes: slices between stack centres. "faithful" is the paper's (every slice the
# centre of a stack); "fast" tiles the volume with stacks, five times fewer forward passes (time
# and Dice against faithful: benchmarks/results/volume_modes.json).
PREDICTION_MODES = {"faithful": 1, "fast": 5}


@dataclass
class Prediction:
    """``labels``: the label map in the input's own array order and size; ``probabilities``:
    ``[K+1, *labels.shape]`` float16 when asked for; ``volume``: the input with its geometry."""

    labels: np.ndarray
    volume: Volume
    probabilities: np.ndarray | None = None
    slice_axis: int = 0
    warnings: list[str] = field(default_factory=list)  # doubtful input (issue 18), one sentence each

    def __repr__(self) -> str:
        counts = np.bincount(self.labels.ravel(), minlength=1)
        classes = ", ".join(f"{c}: {n}" for c, n in enumerate(counts) if c > 0 and n) or "none"
        probs = "" if self.probabilities is None else f", probabilities {list(self.probabilities.shape)}"
        return (
            f"Prediction({self.volume.path.name}: labels {list(self.labels.shape)} {self.labels.dtype}, "
            f"voxels per class {{{classes}}}{probs}, slice axis {self.slice_axis}, {len(self.warnings)} warning(s))"
        )


def stack_centres(num_slices: int, stride: int = 1, slices: int = SLICES) -> list[int]:
    """Centres of the stacks that cover a volume.

    ``stride`` 1 is the paper's: every slice is the centre of a stack, with the end slices repeated
    past the volume. A larger stride puts the stacks ``stride`` slices apart, the first and last
    flush with the volume's ends, so that every slice is covered and no stack reads a repeated
    slice; stride ``slices`` tiles the volume with ``ceil(num_slices / slices)`` stacks.
    """
    if stride < 1 or stride > slices:
        raise ConfigError(f"stride must be between 1 and the slices per stack ({slices}), got {stride}")
    if stride == 1:
        return list(range(num_slices))
    half = slices // 2
    last = max(num_slices - 1 - half, 0)
    centres = [min(half, num_slices - 1)]
    while centres[-1] + half < num_slices - 1:
        centres.append(min(centres[-1] + stride, last))
    return centres


def model_input_spec(model: MASAM) -> InputSpec:
    """The model's input spec; a model without one (built in memory, or set up by hand with
    ``metadata["normalization"]``) gets one derived from its metadata."""
    if model.input_spec is not None:
        return model.input_spec
    return InputSpec.from_legacy(model.metadata, model.config.slices, model.config.image_size)


class Predictor:
    """Predict label maps with an MA-SAM model.

    ``predict(image)`` takes a path (volume file, frame folder or DICOM series folder), a list of
    channel files (``CASE_0000``, ``CASE_0001``, ...), a :class:`Volume`, or a numpy
    array ``[z, y, x]`` with ``spacing``/``origin``/``direction`` (SimpleITK order). The input is
    prepared as the model's :class:`InputSpec` says, unless a ``normalization`` is given.
    """

    def __init__(
        self,
        model: MASAM,
        normalization: Normalization | ChannelNormalization | None = None,
        *,
        batch_size: int = 2,
        device: str | torch.device = "cpu",
        precision: str = "auto",
        stride: int = 1,
    ) -> None:
        self.device = resolve_device(device)
        self.input_spec = model_input_spec(model)
        self.normalization = normalization if normalization is not None else _spec_normalization(self.input_spec)
        # "auto" becomes the device's fastest precision; reduced precisions get their weights cast once
        self.precision = resolve_inference_precision(precision, self.device)
        self.model = prepare_for_precision(model.eval().to(self.device), self.precision)
        self.batch_size = max(1, batch_size)
        self.stride = stride
        self.slices = model.config.slices
        # issue 16: set by masam.infer.predict_files.load_predictor. probs_fn: normalised slices [S, C, s, s] ->
        # probabilities [S, K+1, s, s] (an ensemble, mirroring) used for prompt-free volumes;
        # postprocessing: {class: keep largest component?} applied to the label map.
        self.probs_fn = None
        self.postprocessing: dict[int, bool] | None = None
        self.model_name = "masam"  # for DICOM-SEG headers; from_files names the weights file
        # issue 28: what masam.infer.predict_files.load_predictor put together, one line each (models used,
        # post-processing), printed before any work; and how many models are averaged
        self.description: list[str] = []
        self.ensemble_size = 1
        # issue 26: another engine for the forward pass (e.g. onnxruntime), a callable with the
        # signature and result of forward_stacks; preparation and aggregation stay the same.
        self.engine = None

    @classmethod
    def from_files(
        cls,
        model_path: str | os.PathLike,
        sam_checkpoint: str | os.PathLike | None = None,
        *,
        modality: str | None = None,
        device: str = "cpu",
        image_size: int | None = None,
        **kwargs,
    ) -> Predictor:
        """``modality`` replaces the model's (its stored window and percentile are kept);
        ``image_size``: the input size of an original MA-SAM file (default: ModelConfig's)."""
        sizes = {"image_size": image_size} if image_size is not None else {}
        model = load_model(sam_checkpoint, find_weights(model_path), device=device, **sizes)
        norm = normalization_from_spec(model_input_spec(model), modality) if modality is not None else None
        predictor = cls(model, norm, device=device, **kwargs)
        weights = find_weights(model_path)
        predictor.model_name = f"{weights.parent.name}/{weights.stem}" if weights.parent.name else weights.stem
        return predictor

    @property
    def channels(self) -> int:
        """Input channels per case the model takes (``CASE_0000``, ``CASE_0001``, ...)."""
        norm = self.normalization
        return len(norm.channels) if isinstance(norm, ChannelNormalization) else 1

    def _check_channels(self, volume: Volume) -> None:
        given = 1 + len(volume.channels)
        if not volume.is_video and given != self.channels:
            raise InputError(
                f"{volume.path}: the model takes {describe_channels(self.input_spec.channels[: self.channels])}, "
                f"the input has {given}; give one CASE_000N file per channel"
            )

    def _autocast(self):
        return autocast(self.precision, self.device)

    @property
    def click_feedback(self) -> bool:
        """Whether points are replayed one round at a time with the previous round's prediction as
        the mask prompt (a model trained with correction rounds, issue 22)."""
        return int(self.model.metadata.get("click_rounds", 0)) > 1

    def forward_stacks(
        self, stacks: torch.Tensor, boxes: torch.Tensor | None, points: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Softmax probabilities ``[B, D, K+1, S, S]`` (float32) of stacks ``[B, D, 3, S, S]`` with
        ``boxes`` ``[B, D, 4]`` in model pixels (NaN rows: no target) or None, and ``points``
        ``[B, D, N, 3]`` (x, y, label; label -1: none) in model pixels or None, halving the batch on OOM."""
        if self.engine is not None:
            if points is not None:
                raise ConfigError("point prompts need the PyTorch model, not another engine")
            return self.engine(stacks, boxes)
        try:
            boxes_here = None if boxes is None else boxes.to(self.device)
            with torch.no_grad(), self._autocast():
                if points is None:
                    logits = self.model(stacks.to(self.device), boxes_here)["logits"]
                else:
                    logits = self._decode_points(stacks.to(self.device), boxes_here, points.to(self.device))
            return torch.softmax(logits.float(), dim=2)
        except RuntimeError as err:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(err) or stacks.shape[0] == 1:
                raise
            free_cached_memory(self.device)
            half = stacks.shape[0] // 2
            self.batch_size = max(1, half)

            def part(t, sl):
                return None if t is None else t[sl]

            halves = (slice(None, half), slice(half, None))
            return torch.cat([self.forward_stacks(stacks[h], part(boxes, h), part(points, h)) for h in halves])

    def _decode_points(self, stacks: torch.Tensor, boxes: torch.Tensor | None, points: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, D, K+1, S, S]``: the encoder once, then the points' rounds
        (:func:`masam.model.correction.decode_rounds`)."""
        b, d = stacks.shape[:2]
        embeddings = self.model.encode(stacks)
        flat_boxes = None if boxes is None else boxes.reshape(b * d, 4)
        logits = decode_rounds(
            self.model, embeddings, flat_boxes, points.reshape(b * d, *points.shape[2:]), self.box_label,
            self.click_feedback,
        )  # fmt: skip
        return logits.reshape(b, d, *logits.shape[1:])

    def slice_probabilities(
        self, slices: torch.Tensor, boxes: torch.Tensor | None = None, progress=None, points: torch.Tensor | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Averaged probabilities of each slice, in order: yields ``(index, [K+1, S, S])`` on the
        predictor's device.

        ``slices``: ``[N, C, S, S]`` normalised, model-sized; ``boxes``: ``[N, 4]`` in model pixels
        (NaN rows: no box) or None; ``points``: ``[N, P, 3]`` in model pixels (label -1: none) or None.
        """
        if self.input_spec.orientation != "original":
            yield from self._stack_probabilities(slices, boxes, progress, points)
            return
        # issue 24: the network sees the original's orientation, as in training; the slices' own back
        video, size = slices.shape[1] == 3, slices.shape[-1]
        boxes = None if boxes is None else turn_original_boxes(boxes, size, video)
        points = None if points is None else turn_original_points(points, size, video)
        for index, probs in self._stack_probabilities(turn_original(slices, video), boxes, progress, points):
            yield index, turn_original(probs, video)

    def _stack_probabilities(
        self, slices: torch.Tensor, boxes: torch.Tensor | None = None, progress=None, points: torch.Tensor | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """:meth:`slice_probabilities` in the orientation the network sees."""
        n = slices.shape[0]
        half = self.slices // 2
        # Stacks are cut and probabilities summed where the model runs: on a GPU only the label
        # maps (and probabilities when asked for) come back to the host.
        slices = slices.to(self.device)
        sums: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}
        centres = stack_centres(n, self.stride, self.slices)
        next_out = 0
        start = 0
        while start < len(centres):
            # batch_size may shrink inside forward_stacks (out of memory): always advance by what ran
            batch = centres[start : start + self.batch_size]
            idx = torch.from_numpy(np.stack([stack_indices(n, c, self.slices) for c in batch]))  # [B, D]
            stacks = slices[idx.to(self.device)]
            if getattr(self.normalization, "stack_minmax", False):  # issue 24: as in training
                stacks = scale_stacks(stacks.float())
            if stacks.shape[2] == 1:
                stacks = stacks.expand(-1, -1, 3, -1, -1)
            stack_boxes = None if boxes is None else boxes[idx]
            if points is None:
                probs = self.forward_stacks(stacks.float(), stack_boxes)
            else:
                probs = self.forward_stacks(stacks.float(), stack_boxes, points[idx])
            for b, centre in enumerate(batch):
                for pos in range(self.slices):
                    target = centre - half + pos
                    if 0 <= target < n:  # positions that repeat an end slice fall outside: dropped
                        sums[target] = sums[target] + probs[b, pos] if target in sums else probs[b, pos].clone()
                        counts[target] = counts.get(target, 0) + 1
            if progress is not None:
                progress.update(len(batch))
            start += len(batch)
            done_below = centres[start] - half if start < len(centres) else n
            while next_out < min(done_below, n):
                yield next_out, sums.pop(next_out) / counts.pop(next_out)
                next_out += 1

    def volume_probabilities(
        self, slices: torch.Tensor, boxes: torch.Tensor | None = None, progress=None, points: torch.Tensor | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """As :meth:`slice_probabilities`, through :attr:`probs_fn` (whole volume at once) when one
        is set and there are no prompts."""
        if self.probs_fn is None or boxes is not None or points is not None:
            yield from self.slice_probabilities(slices, boxes, progress, points)
            return
        probs = self.probs_fn(slices.to(self.device))
        if progress is not None:
            progress.update(progress.total - progress.n)
        for index in range(probs.shape[0]):
            yield index, probs[index]
    @property
    def box_label(self) -> int | None:
        """The class the model's box prompts are drawn around (None: all foreground, the original's)."""
        return self.model.metadata.get("box_label")

    @property
    def segments_unprompted(self) -> bool:
        """Whether the model was trained to segment without a box too (prompt dropout above 0)."""
        return self.model.metadata.get("prompt", "none") == "none" or self.model.metadata.get("prompt_dropout", 0) > 0

    def predict(
        self,
        image: str | os.PathLike | Volume | np.ndarray | list[str | os.PathLike],
        *,
        spacing=(1.0, 1.0, 1.0),
        origin=(0.0, 0.0, 0.0),
        direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
        boxes: dict[int, list[float]] | Prompt | None = None,
        return_probabilities: bool = False,
        progress: bool = False,
        where: str = "boxes",
        points: Points | list | None = None,
    ) -> Prediction:
        """``boxes``: ``{slice_index: [x0, y0, x1, y1]}`` in voxel coordinates of the slice
        (columns, rows) along the chosen slice axis, or a prompt of :mod:`masam.infer.boxes`
        (:class:`SliceBoxes`, :class:`Box3D` in voxel or world coordinates, :class:`PropagatedBox`).
        ``points``: ``[[x, y, z, label], ...]`` voxel indices (label 1 include, 0 exclude) or a
        :class:`Points` (voxel or world), in click order, alone or with ``boxes`` (issue 22).
        A model trained with ``--box-label`` gets its class refined inside the prompt and, with
        prompt dropout, its automatic result elsewhere (:func:`masam.infer.prompted.predict_prompted`).
        ``where`` names the prompt's source in errors. A model whose input spec has the original
        MA-SAM's convention goes through :meth:`predict_original_convention`.

        A prompt the model cannot use, or a missing one it needs, is said in the result's warnings
        (issue 28): a box to a model trained without prompts, no box to a box-only model."""
        if isinstance(image, (str, os.PathLike)):  # issue 28: CASE_0001 ... found beside CASE_0000, as the CLI does
            image = channel_files(image, self.input_spec.channels[: self.channels])
        volume = _as_volume(image, spacing, origin, direction)
        self._check_channels(volume)
        prompt = as_prompt(boxes, points, where)
        result = self._predict(volume, prompt, return_probabilities, progress, where)
        result.warnings[:0] = self._prompt_warnings(prompt is not None)
        return result

    def _prompt_warnings(self, boxed: bool) -> list[str]:
        prompt = self.model.metadata.get("prompt")  # None: not known (an original MA-SAM file)
        if boxed and prompt == "none":
            return ["a box prompt to a model trained without prompts: the box changes the result unpredictably "
                    "and does not confine it; predict without --boxes"]  # fmt: skip
        if not boxed and not self.segments_unprompted:
            return ["no box for a model trained with box prompts only (no prompt dropout): it finds almost "
                    "nothing without one"]  # fmt: skip
        return []

    def _predict(self, volume: Volume, prompt, return_probabilities: bool, progress: bool, where: str) -> Prediction:
        if self.input_spec.convention == "original":
            return self.predict_original_convention(volume, prompt is not None, return_probabilities)
        if prompt is None:
            return self.predict_volume(volume, None, return_probabilities, progress)
        if self.box_label is None:  # the original's protocol: boxes around all foreground, every class kept
            if isinstance(prompt, PropagatedBox):
                per_slice, points = prompt_boxes(self, volume, prompt, where), {}
            else:
                per_slice, points = slice_prompts(prompt, volume, slice_axis(volume), where)
            return self.predict_volume(volume, per_slice, return_probabilities, progress, points)
        if return_probabilities:
            raise InputError(f"{where}: no probabilities with box prompts on a --box-label model (one class refined)")
        axis = slice_axis(volume)
        automatic = None
        if not self.segments_unprompted:  # a box-only model: the boxed target alone, background elsewhere
            first = to_slices(volume, axis)[0]
            empty = np.zeros((first.shape[0], *first.shape[-2:]), np.uint8)
            automatic = labels_from_slices(empty, axis, volume.is_video)
        labels = predict_prompted(self, volume, prompt, self.box_label, automatic=automatic, where=where)
        return Prediction(labels, volume, None, axis)

    def predict_volume(
        self,
        volume: Volume,
        boxes: dict[int, list[float]] | None = None,
        return_probabilities: bool = False,
        progress: bool = False,
        points: dict[int, list[list[float]]] | None = None,
    ) -> Prediction:
        """The whole volume through the model with per-slice ``boxes`` (the slice frame, voxels; no
        box where a slice has none) or none at all, and per-slice ``points`` ``{slice: [[x, y,
        label], ...]}`` (the slice frame, voxels) or none: every class as the model gives it."""
        size = self.model.image_size
        slices, axis = prepare_image(volume, self.normalization, size)
        n = slices.shape[0]
        rows, cols = to_slices(volume, axis)[0].shape[-2:]
        box_tensor = box_tensor_of(boxes, n, (rows, cols), size) if boxes else None
        point_tensor = point_tensor_of(points, n, (rows, cols), size) if points else None
        labels = np.zeros((n, rows, cols), np.uint8)
        num_out = self.model.config.num_classes + 1
        probabilities = np.zeros((num_out, n, rows, cols), np.float16) if return_probabilities else None
        bar = None
        if progress:
            from tqdm import tqdm

            stacks = len(stack_centres(n, self.stride, self.slices))
            bar = tqdm(total=stacks, desc=volume.path.name, unit="stack", leave=False)
        for index, probs in self.volume_probabilities(slices, box_tensor, bar, point_tensor):
            if (rows, cols) != (size, size):
                probs = F.interpolate(probs[None], size=(rows, cols), mode="bilinear", align_corners=False)[0]
            labels[index] = probs.argmax(0).to(torch.uint8).cpu().numpy()
            if probabilities is not None:
                probabilities[:, index] = probs.to(torch.float16).cpu().numpy()
        if bar is not None:
            bar.close()
        out_labels = labels_from_slices(labels, axis, volume.is_video)
        if self.postprocessing:
            out_labels = apply_postprocessing(out_labels, self.postprocessing)
        if probabilities is not None and not volume.is_video:
            probabilities = np.moveaxis(probabilities, 1, 1 + axis)
        return Prediction(out_labels, volume, probabilities, axis, self._warnings(slices))

    def _warnings(self, slices: torch.Tensor) -> list[str]:
        """Why a result may be doubtful: another modality than the model's, intensities far off."""
        out = []
        trained = self.input_spec.modality
        if trained is not None and self.normalization.modality != trained:
            out.append(f"normalised as {self.normalization.modality}, but the model was trained on {trained}")
        off = intensity_warning(slices.float().numpy(), self.input_spec.intensity)
        return out + ([off] if off else [])

    def predict_original_convention(self, volume: Volume, boxes: bool = False, probabilities: bool = False):
        """The original code's preprocessing and test loop (issue 12): slices along the file's
        ``[z]`` array axis, 180° turn, CT window + per-stack min-max, cubic zoom both ways.
        Labels ``[z, y, x]`` in the input's geometry; CT only, no prompts, no probabilities."""
        if volume.is_video or self.normalization.modality != "CT":
            raise InputError(
                f"{volume.path}: a model in the original MA-SAM convention predicts CT volumes only "
                f"(modality {self.normalization.modality})"
            )
        if boxes or probabilities:
            raise ConfigError("a model in the original MA-SAM convention takes no boxes and writes no probabilities")
        labels = predict_original(
            lambda stacks: self.forward_stacks(stacks, None), volume.array, self.model.image_size, slices=self.slices,
            batch_size=self.batch_size, **original_ct_settings(self.normalization),
        )  # fmt: skip
        return Prediction(labels, volume, None, 0)


def original_ct_settings(normalization: Normalization) -> dict:
    """Window, mean and std of the original's CT intensities for a normalisation: the box task's
    (dataset_bbox.py:20-22) when its window is [-50, 200], else BTCV's with the window given."""
    window = tuple(float(v) for v in normalization.window)
    if window == ORIGINAL_CT_BOX["window"]:
        return dict(ORIGINAL_CT_BOX)
    return {**ORIGINAL_CT, "window": window}


def _spec_normalization(spec: InputSpec) -> Normalization:
    """The spec's normalisation; an original MA-SAM file (no modality stored) is CT, the only
    modality the original's test loop reads (test.py)."""
    if spec.convention == "original" and spec.modality is None:
        return Normalization("CT")
    return normalization_from_spec(spec)


def _as_volume(image, spacing, origin, direction) -> Volume:
    if isinstance(image, Volume):
        return image
    if isinstance(image, (list, tuple)):  # one file per channel (issue 15)
        return read_channels(list(image))
    if isinstance(image, np.ndarray):
        if image.ndim != 3:
            raise InputError(f"expected a 3D array [z, y, x], got shape {image.shape}")
        return Volume(image, tuple(spacing), tuple(origin), tuple(direction), Path("<array>"))
    return read_volume(image)


def box_tensor_of(boxes: dict[int, list[float]], n: int, plane: tuple[int, int], size: int) -> torch.Tensor:
    """Boxes in voxels of the ``(rows, cols)`` slice -> ``[n, 4]`` in model pixels (NaN: no box)."""
    rows, cols = plane
    out = torch.full((n, 4), float("nan"))
    scale = torch.tensor([size / cols, size / rows, size / cols, size / rows])
    for index, box in boxes.items():
        out[int(index)] = torch.tensor(box, dtype=torch.float32) * scale
    return out


def point_tensor_of(points: dict[int, list[list[float]]], n: int, plane: tuple[int, int], size: int) -> torch.Tensor:
    """Points ``{slice: [[x, y, label], ...]}`` in voxels of the ``(rows, cols)`` slice -> ``[n, P, 3]``
    in model pixels (a voxel's centre to the model pixels' centre), label -1 where a slice has fewer."""
    rows, cols = plane
    most = max(len(v) for v in points.values())
    out = torch.full((n, most, 3), -1.0)
    for index, given in points.items():
        for j, (x, y, label) in enumerate(given):
            out[int(index), j] = torch.tensor([(x + 0.5) * size / cols - 0.5, (y + 0.5) * size / rows - 0.5, label])
    return out


def as_prompt(boxes, points, where: str) -> Prompt | None:
    """One prompt of :meth:`Predictor.predict`'s ``boxes`` and ``points``."""
    box = boxes
    if boxes is not None and not isinstance(boxes, (SliceBoxes, Box3D, PropagatedBox, Points)):
        box = SliceBoxes({int(k): tuple(b) for k, b in boxes.items()})
    if points is None:
        return box
    if not isinstance(points, Points):
        points = parse_prompt({"points": [list(p) for p in points]}, where)
    if box is None:
        return points
    if isinstance(box, (Points, PropagatedBox)) or points.box is not None:
        raise InputError(f"{where}: give points with boxes on slices or one 3D box, and that box once")
    return Points(points.points, points.space, box)
