"""An interactive session (issue 22): the volume is encoded once, and each prompt runs only the
prompt encoder and the mask decoder on the slices it touches.

The result is the one ``masam predict`` gives for the same prompts (``Predictor.predict`` with
``boxes``/``points``), voxel for voxel: every slice is averaged over the stacks that hold it, a
model trained with correction rounds replays points one at a time with the previous prediction as
the mask prompt (:mod:`masam.model.correction`), and the target is redrawn inside the prompt's
region over the starting label map (:func:`masam.infer.prompted.merge_prompted`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.io import Volume, slice_axis
from ..data.normalize import scale_stacks
from ..data.slices import labels_from_slices, prepare_image, stack_indices, to_slices
from ..errors import InputError
from ..infer.boxes import (
    Box3D,
    BoxError,
    Points,
    SliceBoxes,
    box_region,
    grow_box,
    mask_box,
    propagate_from_slice,
    slice_boxes,
    slice_points,
)
from ..infer.predictor import Prediction, Predictor, _as_volume, box_tensor_of, point_tensor_of, stack_centres
from ..infer.prompted import merge_prompted
from ..model.correction import decode_rounds, mask_prompt


@dataclass(frozen=True)
class SliceState:
    """One object's prompts on one slice (the slice frame, voxels): ``box`` or None, ``points``
    ``((x, y, label), ...)`` in click order, ``logits`` the last round's ``[m, K+1, S, S]`` (one
    row per stack holding the slice; the mask prompt of the next click), ``target`` the object's
    mask ``[rows, cols]`` and ``walked`` True where a propagation drew it."""

    box: tuple[float, float, float, float] | None
    points: tuple[tuple[float, float, int], ...]
    logits: torch.Tensor | None
    target: np.ndarray
    walked: bool = False


@dataclass(frozen=True)
class Change:
    """What a call changed: the ``slices`` it decoded (along ``axis``) and ``bounds``, the
    inclusive ``(low, high)`` corners (input array order) of the voxels whose label changed, or
    None when none did."""

    axis: int
    slices: tuple[int, ...]
    bounds: tuple[tuple[int, ...], tuple[int, ...]] | None


class Session:
    """``Session(predictor).set_image(volume)``, then ``add_points``, ``add_box``, ``propagate``,
    ``undo``, ``reset``; ``result()`` is the label map in the input's array order and ``save(path)``
    writes it as ``masam predict`` does.

    ``object``: the label value an object's target is written with (default: the model's
    ``box_label``, else 1); several objects are kept apart. ``base``: the label map where nothing
    is prompted, "automatic" (the model's own prediction) or "empty"; by default automatic when
    the model segments without a prompt (prompt dropout), else empty, as ``masam predict``.
    ``start="automatic"``: a slice's first click corrects the automatic prediction (given as the
    mask prompt) rather than starting from nothing."""

    def __init__(self, predictor: Predictor, *, start: str = "empty", base: str | None = None) -> None:
        base = base or ("automatic" if predictor.segments_unprompted else "empty")
        for name, value in (("start", start), ("base", base)):
            if value not in ("empty", "automatic"):
                raise InputError(f"{name} must be 'empty' or 'automatic', got {value!r}")
            if value == "automatic" and not predictor.segments_unprompted:
                raise InputError(f"{name}='automatic' needs a model trained to segment unprompted (prompt dropout)")
        self.predictor = predictor
        self.model = predictor.model
        self.start = start
        self.base = base
        self.volume: Volume | None = None
        self._embeddings: dict[int, torch.Tensor] = {}
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_progress: Callable[[int, int], None] | None = None

    # ------------------------------------------------------------------ the image
    def set_image(
        self,
        image,
        *,
        focus: int | None = None,
        background: bool = True,
        spacing=(1.0, 1.0, 1.0),
        origin=(0.0, 0.0, 0.0),
        direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
    ) -> None:
        """Prepare ``image`` as ``Predictor.predict`` does and encode its stacks: those holding
        slice ``focus`` (default: the middle one; along the slice axis) first, before returning,
        then the rest, nearest first, in a background thread (``background=False``: all before
        returning). :attr:`progress` says how far it is; :meth:`cancel` stops it."""
        self.cancel()
        volume = _as_volume(image, spacing, origin, direction)
        self.predictor._check_channels(volume)
        if self.predictor.input_spec.convention == "original":
            raise InputError(f"{volume.path}: a model in the original MA-SAM convention takes no prompts")
        if self.predictor.input_spec.orientation == "original":  # issue 24's --orientation original
            raise InputError(f"{volume.path}: a model trained in the original's orientation: use masam predict")
        self.volume = volume
        self.slices, self.axis = prepare_image(volume, self.predictor.normalization, self.model.image_size)
        self.n = self.slices.shape[0]
        self.plane = tuple(to_slices(volume, self.axis)[0].shape[-2:])
        self.centres = stack_centres(self.n, self.predictor.stride, self.predictor.slices)
        self._coverage = _coverage(self.centres, self.n, self.predictor.slices)
        self._embeddings = {}
        self._cancel = threading.Event()
        self.objects: dict[int, dict[int, SliceState]] = {}
        self._history: list[tuple[int, dict[int, SliceState | None]]] = []
        self._base = np.zeros((self.n, *self.plane), np.uint8)
        self._base_done = np.full(self.n, self.base == "empty")
        self.labels = self._base.copy()
        focus = self.n // 2 if focus is None else int(np.clip(focus, 0, self.n - 1))
        first = sorted({c for c, _ in self._coverage[focus]})
        order = sorted(set(range(len(self.centres))) - set(first), key=lambda c: abs(self.centres[c] - focus))
        for c in first:
            self._embedding(c)
        if background:
            self._thread = threading.Thread(target=self._encode_all, args=(order,), daemon=True)
            self._thread.start()
        else:
            self._encode_all(order)

    @property
    def progress(self) -> tuple[int, int]:
        """(stacks encoded, stacks in the volume)."""
        return len(self._embeddings), len(self.centres)

    def cancel(self) -> None:
        """Stop the background encoding (stacks still missing are encoded when a prompt needs them)."""
        self._cancel.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def wait(self) -> None:
        """Until every stack is encoded."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for c in range(len(self.centres)):
            self._embedding(c)

    def _encode_all(self, order: list[int]) -> None:
        for c in order:
            if self._cancel.is_set():
                return
            self._embedding(c)

    def _embedding(self, c: int) -> torch.Tensor:
        """The image embeddings ``[D, 256, h, w]`` of stack ``c`` (its index in :attr:`centres`)."""
        ready = self._embeddings.get(c)
        if ready is not None:  # no lock: a click must not wait for the background's current stack
            return ready
        with self._lock:
            if c not in self._embeddings:
                idx = torch.from_numpy(stack_indices(self.n, self.centres[c], self.predictor.slices))
                stack = self.slices[idx][None].to(self.predictor.device)
                if getattr(self.predictor.normalization, "stack_minmax", False):  # as the predictor
                    stack = scale_stacks(stack.float())
                if stack.shape[2] == 1:
                    stack = stack.expand(-1, -1, 3, -1, -1)
                with torch.no_grad(), self.predictor._autocast():
                    self._embeddings[c] = self.model.encode(stack.float())
                if self.on_progress is not None:
                    self.on_progress(*self.progress)
            return self._embeddings[c]

    # ------------------------------------------------------------------ prompts
    def _object(self, value: int | None) -> int:
        if value is not None:
            if int(value) < 1:
                raise InputError(f"an object is a label value of 1 or more, got {value}")
            return int(value)
        return self.predictor.box_label or 1

    def _require_image(self) -> None:
        if self.volume is None:
            raise InputError("no image: call set_image first")

    def add_points(self, points, *, space: str = "voxel", object: int | None = None) -> Change:
        """Clicks ``[[x, y, z, label], ...]`` (label 1 include, 0 exclude; voxel indices or world
        mm), each on the slice it lies on, in the order given (each one a correction round)."""
        self._require_image()
        parsed = Points(tuple((*map(float, p[:3]), int(p[3])) for p in points), space)
        per_slice = slice_points(parsed, self.volume, self.axis, where="session")
        key = self._object(object)
        states = self.objects.setdefault(key, {})
        before = {s: states.get(s) for s in per_slice}
        for s, given in per_slice.items():
            for x, y, label in given:
                states[s] = self._click(states.get(s), s, (x, y, int(label)))
        return self._record(key, before)

    def add_box(self, box, *, slice: int | None = None, space: str = "voxel", object: int | None = None) -> Change:
        """A box: ``[x0, y0, x1, y1]`` on ``slice`` (the slice frame, voxels), or a 3D box
        ``[x0, y0, z0, x1, y1, z1]`` (voxel or world) that boxes every slice of its extent. A box
        replaces the slice's box; its points are replayed after it."""
        self._require_image()
        if slice is not None:
            boxes = slice_boxes(_slice_box(box, slice), self.volume, self.axis, "session")
        else:
            boxes = slice_boxes(Box3D(tuple(float(v) for v in box), space), self.volume, self.axis, "session")
        key = self._object(object)
        states = self.objects.setdefault(key, {})
        before = {s: states.get(s) for s in boxes}
        for s, b in boxes.items():
            old = states.get(s)
            states[s] = self._replay(s, tuple(b), () if old is None else old.points)
        return self._record(key, before)

    def propagate(self, slice: int, box, *, object: int | None = None, margin: float = 0.1) -> Change:
        """A box on one slice walked to the neighbouring slices until the target ends, as a
        propagated box of ``masam predict`` (:func:`masam.infer.boxes.propagate_from_slice`)."""
        self._require_image()
        start = slice_boxes(_slice_box(box, slice), self.volume, self.axis, "session")[slice]
        key = self._object(object)
        label = self.predictor.box_label
        walk = propagate_from_slice(lambda i, b: self._centre_target(i, b, label), self.n, slice, start, margin=margin)
        states = self.objects.setdefault(key, {})
        reached = [i for i, m in enumerate(walk) if m.any()]
        before = {s: states.get(s) for s in reached}
        for s in reached:
            grown = tuple(grow_box(mask_box(walk[s]), walk[s].shape, margin, 2.0))
            states[s] = SliceState(grown, (), None, walk[s], walked=True)
        return self._record(key, before)

    def undo(self) -> Change:
        """Take the last call back (nothing to undo: an empty change)."""
        self._require_image()
        if not self._history:
            return Change(self.axis, (), None)
        key, before = self._history.pop()
        states = self.objects.setdefault(key, {})
        for s, state in before.items():
            if state is None:
                states.pop(s, None)
            else:
                states[s] = state
        return self._refresh(before)

    def reset(self, object: int | None = None) -> Change:
        """Forget one object's prompts (None: every object's); undoable."""
        self._require_image()
        keys = list(self.objects) if object is None else [self._object(object)]
        touched: dict[int, SliceState | None] = {}
        for key in keys:
            before = dict(self.objects.get(key, {}))
            self.objects[key] = {}
            self._history.append((key, before))
            touched.update(before)
        return self._refresh(touched)

    # ------------------------------------------------------------------ decoding
    def _rows(self, s: int) -> torch.Tensor:
        return torch.stack([self._embedding(c)[pos] for c, pos in self._coverage[s]])

    def _prompt_tensors(self, s: int, box, points) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        m, size = len(self._coverage[s]), self.model.image_size
        device = self.predictor.device
        boxes = box_tensor_of({0: list(box)}, 1, self.plane, size).expand(m, -1).to(device) if box else None
        pts = point_tensor_of({0: [list(p) for p in points]}, 1, self.plane, size) if points else None
        return boxes, None if pts is None else pts.expand(m, -1, -1).to(device)

    def _decode(self, s: int, box, points, masks: torch.Tensor | None = None, replay: bool = False) -> torch.Tensor:
        """Logits ``[m, K+1, S, S]`` of slice ``s`` in each stack holding it."""
        boxes, pts = self._prompt_tensors(s, box, points)
        rows = self._rows(s)
        with torch.no_grad(), self.predictor._autocast():
            if replay:
                start = self._start_logits(s) if box is None else None
                return decode_rounds(
                    self.model, rows, boxes, pts, self.predictor.box_label, self.predictor.click_feedback, start
                ).float()
            return self.model.decode_rows(rows, boxes, pts, masks)[0].float()

    def _start_logits(self, s: int) -> torch.Tensor | None:
        if self.start != "automatic":
            return None
        with torch.no_grad(), self.predictor._autocast():
            return self.model.decode_rows(self._rows(s))[0].float()

    def _replay(self, s: int, box, points) -> SliceState:
        logits = self._decode(s, box, points, replay=True)
        return SliceState(box, tuple(points), logits, self._target(logits, self.predictor.box_label))

    def _click(self, state: SliceState | None, s: int, point: tuple[float, float, int]) -> SliceState:
        """One more click on slice ``s``: one round (the last round's prediction as the mask
        prompt), or a replay of all of the slice's points for a model without correction rounds."""
        box = None if state is None else state.box
        points = (() if state is None else state.points) + (point,)
        if not self.predictor.click_feedback or state is None or state.logits is None:
            return self._replay(s, box, points)
        masks = mask_prompt(state.logits, self.predictor.box_label, self.model.prompt_encoder.mask_input_size)
        logits = self._decode(s, box, points, masks.to(self.predictor.device))
        return SliceState(box, points, logits, self._target(logits, self.predictor.box_label))

    def _probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """A slice's probabilities ``[K+1, rows, cols]`` from its logits in each stack holding it
        ``[m, K+1, S, S]``: softmax, summed in stack order and averaged, resized, as ``Predictor``."""
        total = None
        for row in torch.softmax(logits.float(), dim=1):
            total = row.clone() if total is None else total + row
        probs = total / logits.shape[0]
        if tuple(probs.shape[-2:]) != self.plane:
            probs = F.interpolate(probs[None], size=self.plane, mode="bilinear", align_corners=False)[0]
        return probs

    def _target(self, logits: torch.Tensor, label: int | None) -> np.ndarray:
        """The object's mask ``[rows, cols]`` (class ``label``; None: any foreground)."""
        classes = _argmax(self._probabilities(logits))
        return classes > 0 if label is None else classes == label

    def _centre_target(self, s: int, box: list[float], label: int | None) -> np.ndarray:
        """Slice ``s``'s target given ``box`` from the stack centred on it alone (propagation's
        step, :func:`masam.infer.prompted.model_slice_probabilities`)."""
        half = self.predictor.slices // 2
        centre = self.centres.index(s) if s in self.centres else None
        if centre is None:
            raise InputError("propagation needs every slice as a stack centre (prediction mode 'faithful')")
        boxes, _ = self._prompt_tensors(s, box, ())
        with torch.no_grad(), self.predictor._autocast():
            logits = self.model.decode_rows(self._embedding(centre)[half : half + 1], boxes[:1])[0].float()
        return self._target(logits, label)

    # ------------------------------------------------------------------ the label map
    def _record(self, key: int, before: dict[int, SliceState | None]) -> Change:
        self._history.append((key, before))
        return self._refresh(before)

    def _base_slice(self, s: int) -> np.ndarray:
        """Slice ``s`` of the starting map: the automatic prediction (computed when first needed)
        or background."""
        if not self._base_done[s]:
            with torch.no_grad(), self.predictor._autocast():
                logits = self.model.decode_rows(self._rows(s))[0].float()
            self._base[s] = _argmax(self._probabilities(logits))
            self._base_done[s] = True
            if not self.objects_on(s):
                self.labels[s] = self._base[s]
        return self._base[s]

    def objects_on(self, s: int) -> list[int]:
        """The objects with prompts on slice ``s``."""
        return [key for key, states in self.objects.items() if s in states]

    def _refresh(self, touched: dict) -> Change:
        """Redraw the touched slices from the starting map and every object's prompts there."""
        changed = []
        for s in sorted(touched):
            out = self._base_slice(s)
            for key in sorted(self.objects):
                state = self.objects[key].get(s)
                if state is not None:
                    region = _slice_region(state, self.plane)
                    out = merge_prompted(out, state.target, key, region)
            if not np.array_equal(out, self.labels[s]):
                changed.append((s, out != self.labels[s]))
            self.labels[s] = out
        return Change(self.axis, tuple(sorted(touched)), self._bounds(changed))

    def _bounds(self, changed: list[tuple[int, np.ndarray]]):
        """The changed voxels' corners in the input's array order, from the changed slices alone
        (the slice index goes back to the slice axis, as :func:`labels_from_slices` moves it)."""
        if not changed:
            return None
        lows, highs = [], []
        for s, where in changed:
            rows, cols = np.nonzero(where)
            lows.append((s, rows.min(), cols.min()))
            highs.append((s, rows.max(), cols.max()))
        low, high = np.min(lows, 0), np.max(highs, 0)
        order = [1, 2]
        order.insert(0 if self.volume.is_video else self.axis, 0)
        return tuple(int(low[i]) for i in order), tuple(int(high[i]) for i in order)

    def result(self) -> np.ndarray:
        """The label map in the input's array order and size."""
        self._require_image()
        for s in range(self.n):
            self._base_slice(s)
        return labels_from_slices(self.labels, self.axis, self.volume.is_video)

    def prediction(self) -> Prediction:
        """:meth:`result` with its volume, as ``Predictor.predict`` returns it."""
        return Prediction(self.result(), self.volume, None, slice_axis(self.volume))

    def save(self, path: str | os.PathLike):
        """Write :meth:`result` as ``masam predict`` writes (NIfTI, NRRD, MHA by the ending; a
        DICOM-SEG for ``.dcm`` when the input was a DICOM series); the input's geometry is kept."""
        from ..infer.predict_files import write_result

        return write_result(path, self.prediction(), self.predictor)


def _argmax(probs: torch.Tensor) -> np.ndarray:
    """The class of each pixel ``[rows, cols]`` uint8 from ``[K+1, rows, cols]``: the first of the
    largest, as ``torch.argmax``; in numpy, which reduces the short class axis tens of times faster."""
    return probs.cpu().numpy().argmax(0).astype(np.uint8)


def _coverage(centres: list[int], n: int, depth: int) -> list[list[tuple[int, int]]]:
    """For each slice, the ``(stack, position)`` pairs holding it, in stack order (the order in
    which ``Predictor.slice_probabilities`` sums them); repeated end slices do not count."""
    half = depth // 2
    out: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for c, centre in enumerate(centres):
        for pos in range(depth):
            target = centre - half + pos
            if 0 <= target < n:
                out[target].append((c, pos))
    return out


def _slice_box(box, index: int) -> SliceBoxes:
    values = [float(v) for v in box]
    if len(values) != 4:
        raise BoxError(f"session: a box on a slice is [x0, y0, x1, y1], got {list(box)}")
    return SliceBoxes({int(index): tuple(values)})


def _slice_region(state: SliceState, plane: tuple[int, int]) -> np.ndarray:
    """Where a slice's prompts redraw the target (:func:`masam.infer.boxes.prompt_region`)."""
    if state.box is None:
        return np.ones(plane, bool)
    return box_region({0: list(state.box)}, (1, *plane))[0]


__all__ = ["Change", "Session", "SliceState"]
