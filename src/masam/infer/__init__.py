"""Inference: whole-volume prediction with stack aggregation, outputs with the input's geometry."""

from ..run_folder import find_weights
from .predictor import PREDICTION_MODES, Prediction, Predictor, stack_centres

__all__ = ["PREDICTION_MODES", "Prediction", "Predictor", "find_weights", "stack_centres"]
