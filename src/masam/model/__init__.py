"""The MA-SAM model: SAM's parts plus FacT and 3D adapters (knows nothing of data or CLI)."""

from .build import build_model
from .config import ARCHS, EncoderArch, ModelConfig
from .masam import MASAM, count_parameters, parameter_group

__all__ = ["ARCHS", "EncoderArch", "MASAM", "ModelConfig", "build_model", "count_parameters", "parameter_group"]
