"""Inference: whole-volume prediction with stack aggregation, outputs with the input's geometry."""

from .predictor import Prediction, Predictor, find_weights, stack_centres

__all__ = ["Prediction", "Predictor", "find_weights", "stack_centres"]
