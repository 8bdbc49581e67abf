"""Inference: whole-volume prediction with stack aggregation, outputs with the input's geometry."""

from .predictor import PREDICTION_MODES, Prediction, Predictor, find_weights, stack_centres

__all__ = ["PREDICTION_MODES", "Prediction", "Predictor", "find_weights", "stack_centres"]
