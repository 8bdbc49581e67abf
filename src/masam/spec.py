"""What a model expects as input, stored with its weights: :class:`InputSpec`.

A low-level module: it imports nothing from the package, so the model, the data pipeline, the
trainer and the predictor can all read it. The trainer writes the spec into the weights file's
header; the predictor reads it back to prepare images exactly as in training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

MODALITIES = ("CT", "MRI", "RGB")
# "masam": masam's own in-plane orientation, normalisation without per-stack min-max, cubic
# resizing through torch. "original": the original MA-SAM code's orientation, per-stack min-max and
# scipy cubic resizing (files written or converted from that code).
CONVENTIONS = ("masam", "original")
# The model's default in-plane input size (the paper's) and slices per stack: the one place they
# are written (ModelConfig, the command-line settings and InputSpec take them from here).
IMAGE_SIZE = 512
SLICES = 5
# issue 24: the in-plane orientation of the slices the network sees, for models masam trains:
# "masam" (SimpleITK's [y, x]) or "original" (turned 180°; video frames anti-transposed), as the
# original's loader and test.py give them (the paper presets)
ORIENTATIONS = ("masam", "original")


@dataclass(frozen=True)
class InputSpec:
    """The input contract of a model.

    * ``modality``: CT, MRI or RGB; None when unknown (an original MA-SAM file: give one at
      prediction time);
    * ``channels``: the input channel names (dataset.json's ``channel_names``; one for now);
    * ``normalization``: per channel, the normalisation's settings as a plain dict (the fields of
      ``masam.data.Normalization``: ``modality``, ``window``, ``percentile``);
    * ``slices``: slices per stack; ``image_size``: the model's in-plane input size;
    * ``convention``: one of :data:`CONVENTIONS`;
    * ``orientation``: one of :data:`ORIENTATIONS` (the masam convention's slices as the network
      sees them; the original convention always uses the original's);
    * ``intensity``: an optional summary of the normalised training intensities (None for now).
    """

    modality: str | None = None
    channels: tuple[str, ...] = ()
    normalization: tuple[dict[str, Any], ...] = ()
    slices: int = SLICES
    image_size: int = IMAGE_SIZE
    convention: str = "masam"
    intensity: dict[str, Any] | None = None
    orientation: str = "masam"

    def __post_init__(self) -> None:
        if self.modality is not None and self.modality not in MODALITIES:
            raise ValueError(f"input spec: modality must be one of {', '.join(MODALITIES)} or None: {self.modality!r}")
        if self.convention not in CONVENTIONS:
            raise ValueError(f"input spec: convention must be one of {', '.join(CONVENTIONS)}, got {self.convention!r}")
        if self.orientation not in ORIENTATIONS:
            raise ValueError(f"input spec: orientation must be one of {', '.join(ORIENTATIONS)}: {self.orientation!r}")
        if len(self.normalization) not in (0, len(self.channels)):
            raise ValueError("input spec: one normalisation per channel is needed")
        if self.slices < 1 or self.image_size < 1:
            raise ValueError(f"input spec: slices and image size must be positive: {self.slices}, {self.image_size}")
        # frozen: set the canonical containers (JSON's lists inside, so that a spec read back from a
        # file equals the one written) through object.__setattr__
        object.__setattr__(self, "channels", tuple(str(c) for c in self.channels))
        object.__setattr__(self, "normalization", tuple(_jsonable(dict(n)) for n in self.normalization))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["channels"] = list(self.channels)
        out["normalization"] = [dict(n) for n in self.normalization]
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InputSpec:
        """The inverse of :meth:`to_dict`; unknown keys are an error (a newer writer's spec)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"input spec: unknown fields {unknown}")
        values = dict(values)
        values["channels"] = tuple(values.get("channels", ()))
        values["normalization"] = tuple(values.get("normalization", ()))
        return cls(**values)

    @classmethod
    def from_legacy(cls, metadata: dict[str, Any], slices: int, image_size: int) -> InputSpec:
        """The spec of a masam file written before specs existed: its ``metadata["normalization"]``
        (absent: modality unknown)."""
        norm = metadata.get("normalization")
        if not norm:
            return cls(slices=slices, image_size=image_size)
        modality = norm.get("modality")
        return cls(modality, (str(modality),), (dict(norm),), slices, image_size)

    def with_modality(self, modality: str) -> InputSpec:
        """The spec with another modality (one of :data:`MODALITIES`; the predictor's ``--modality``):
        the stored normalisation settings are kept, their modality replaced."""
        stored = dict(self.normalization[0]) if self.normalization else {}
        stored["modality"] = modality
        channels = self.channels or (modality,)
        return dataclasses.replace(self, modality=modality, channels=channels[:1], normalization=(stored,))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
