"""masam: MA-SAM, the Segment Anything Model adapted to 3D medical images."""

from ._version import __version__
from .errors import CheckpointError, MasamError
from .model import MASAM, ModelConfig, build_model, count_parameters
from .model.checkpoint import convert_original, load_model, save_weights
from .spec import InputSpec

__all__ = [
    "MASAM",
    "CheckpointError",
    "InputSpec",
    "MasamError",
    "ModelConfig",
    "build_model",
    "convert_original",
    "count_parameters",
    "load_model",
    "save_weights",
    "__version__",
]
