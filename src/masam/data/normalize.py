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


@dataclass
class Normalization:
    """``CT``: clip to ``window`` (HU) and scale; ``MRI``: clip to [min, ``percentile``-th
    percentile] of the volume and scale; ``RGB``: divide by 255."""

    modality: str = "CT"
    window: tuple[float, float] = (-200.0, 250.0)
    percentile: float = 99.0

    def __post_init__(self) -> None:
        self.modality = modality_from_name(self.modality)
        self.window = (float(self.window[0]), float(self.window[1]))
        if self.window[1] <= self.window[0]:
            raise ConfigError(f"CT window must be increasing, got {self.window}")

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, array: np.ndarray) -> np.ndarray:
        if self.modality == "RGB":
            return (array.astype(np.float32) / 255.0).clip(0.0, 1.0)
        if self.modality == "CT":
            low, high = self.window
        else:
            low, high = float(array.min()), float(np.percentile(array, self.percentile))
        if high <= low:
            return np.zeros(array.shape, np.float32)
        out = (array.astype(np.float32) - np.float32(low)) / np.float32(high - low)
        return out.clip(0.0, 1.0)


def normalization_from_spec(spec: InputSpec, modality: str | None = None) -> Normalization:
    """The normalisation a model's input spec asks for; ``modality`` (a name, e.g. ``"T2"``)
    replaces the stored one. A spec without a modality (an original MA-SAM file) needs one."""
    if modality is not None:
        spec = spec.with_modality(modality_from_name(modality))
    if spec.modality is None or not spec.normalization:
        raise ConfigError("the model stores no normalisation (e.g. a converted original file): give a modality")
    return Normalization(**spec.normalization[0])


def spec_for(normalization: Normalization, channels: tuple[str, ...], slices: int, image_size: int) -> InputSpec:
    """The input spec of a model trained on data normalised by ``normalization``."""
    channels = channels[:1] or (normalization.modality,)
    return InputSpec(normalization.modality, channels, (normalization.to_dict(),), slices, image_size)
