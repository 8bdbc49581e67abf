"""Intensity normalisation by modality, to floats in [0, 1].

No per-stack min-max step after windowing (the original code had one): it would make the value of
a tissue depend on what else lies in its five slices, so the same HU would map to different
inputs in neighbouring stacks; after the window, values are already in [0, 1] and consistent across
the volume. A test checks that one voxel value gives one normalised value everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError
from ..spec import InputSpec

MODALITIES = ("CT", "MRI", "RGB")
_ALIASES = {
    "ct": "CT",
    "mri": "MRI",
    "mr": "MRI",
    "t1": "MRI",
    "t1w": "MRI",
    "t1c": "MRI",
    "t1gd": "MRI",
    "t2": "MRI",
    "t2w": "MRI",
    "flair": "MRI",
    "adc": "MRI",
    "dwi": "MRI",
    "pd": "MRI",
    "rgb": "RGB",
    "video": "RGB",
    "endoscopy": "RGB",
}


def modality_from_name(name: str) -> str:
    """Map a channel name (``dataset.json``) or ``--modality`` value to CT, MRI or RGB."""
    key = name.strip().lower().replace("-", "").replace(" ", "")
    if key not in _ALIASES:
        raise ConfigError(f"unknown modality {name!r}: use CT, MRI (or an MR sequence name such as T2) or RGB")
    return _ALIASES[key]


MRI_RULES = ("robust", "percentile")
# The robust rule's window, in interquartile ranges of the foreground around its median: brain and
# organ tissue sit near the middle, lesions up to 4 IQR brighter stay below the ceiling.
ROBUST_WINDOW = (-2.0, 4.0)


@dataclass
class Normalization:
    """``CT``: clip to ``window`` (HU) and scale; ``RGB``: divide by 255; ``MRI`` by ``mri_rule``:

    - ``percentile`` (the original's): clip to [min, ``percentile``-th percentile] of the volume;
    - ``robust``: clip to median + :data:`ROBUST_WINDOW` x IQR of the foreground (voxels above the
      volume's minimum). A lesion moves the median and quartiles little, while it moves the 99th
      percentile of a volume whose foreground is a sixth of it (docs/learning.md).

    ``mri_rule`` defaults to ``percentile``: what a spec written before the field existed means.
    """

    modality: str = "CT"
    window: tuple[float, float] = (-200.0, 250.0)
    percentile: float = 99.0
    mri_rule: str = "percentile"

    def __post_init__(self) -> None:
        self.modality = modality_from_name(self.modality)
        self.window = (float(self.window[0]), float(self.window[1]))
        if self.window[1] <= self.window[0]:
            raise ConfigError(f"CT window must be increasing, got {self.window}")
        if self.mri_rule not in MRI_RULES:
            raise ConfigError(f"unknown MRI normalisation {self.mri_rule!r}: use one of {', '.join(MRI_RULES)}")

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if self.modality == "RGB":
            return (array.astype(np.float32) / 255.0).clip(0.0, 1.0)
        if self.modality == "CT":
            low, high = self.window
        elif self.mri_rule == "robust":
            low, high = robust_window(array)
        else:
            low, high = float(array.min()), float(np.percentile(array, self.percentile))
        if high <= low:
            return np.zeros(array.shape, np.float32)
        out = (array.astype(np.float32) - np.float32(low)) / np.float32(high - low)
        return out.clip(0.0, 1.0)


def robust_window(array: np.ndarray) -> tuple[float, float]:
    """(low, high) of the ``robust`` MRI rule; an image without foreground gives an empty window."""
    foreground = array[array > array.min()]
    if foreground.size == 0:
        return 0.0, 0.0
    q25, median, q75 = np.percentile(foreground, [25, 50, 75]).astype(np.float64)
    iqr = q75 - q25
    return float(median + ROBUST_WINDOW[0] * iqr), float(median + ROBUST_WINDOW[1] * iqr)


# --- issue 15: several channels per case
MAX_CHANNELS = 3


class ChannelNormalization:
    """Several channels (``CASE_0000``, ``CASE_0001``, ...), each normalised by its own rule, filling
    SAM's three input channels: 3 channels map one to one; with 2, the third input channel is the
    mean of the two normalised channels (so both stay visible to all of SAM's RGB filters).

    Called on ``[S, C, h, w]`` slices (C the number of channels) -> ``[S, 3, h, w]`` float32.
    """

    def __init__(self, channels: list[Normalization]) -> None:
        if not 2 <= len(channels) <= MAX_CHANNELS:
            raise ConfigError(f"{len(channels)} channels: 2 or 3 can be combined (choose 3 channels)")
        self.channels = list(channels)
        self.modality = channels[0].modality

    def to_dict(self) -> dict:
        return {"channels": [c.to_dict() for c in self.channels]}

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if array.shape[1] != len(self.channels):
            raise ConfigError(f"expected {len(self.channels)} channels per slice, got {array.shape[1]}")
        out = [norm(array[:, c]) for c, norm in enumerate(self.channels)]
        if len(out) == 2:
            out.append((out[0] + out[1]) / np.float32(2))
        return np.stack(out, axis=1)


def normalization_from_spec(
    spec: InputSpec, modality: str | None = None
) -> Normalization | ChannelNormalization:
    """The normalisation a model's input spec asks for; ``modality`` (a name, e.g. ``"T2"``)
    replaces the stored one. A spec without a modality (an original MA-SAM file) needs one."""
    if len(spec.normalization) > 1:
        if modality is not None:
            raise ConfigError(f"the model takes {len(spec.channels)} channels {list(spec.channels)}: no --modality")
        return ChannelNormalization([Normalization(**n) for n in spec.normalization])
    if modality is not None:
        spec = spec.with_modality(modality_from_name(modality))
    if spec.modality is None or not spec.normalization:
        raise ConfigError("the model stores no normalisation (e.g. a converted original file): give a modality")
    return Normalization(**spec.normalization[0])


def spec_for(
    normalization: Normalization | ChannelNormalization, channels: tuple[str, ...], slices: int, image_size: int
) -> InputSpec:
    """The input spec of a model trained on data normalised by ``normalization`` (one entry per channel)."""
    if isinstance(normalization, ChannelNormalization):
        norms = tuple(n.to_dict() for n in normalization.channels)
        return InputSpec(normalization.modality, channels, norms, slices, image_size)
    channels = channels[:1] or (normalization.modality,)
    return InputSpec(normalization.modality, channels, (normalization.to_dict(),), slices, image_size)
