"""Evaluation: Dice, HD95 and surface Dice in millimetres."""

from .evaluate import evaluate_folders, format_table, write_results
from .metrics import binary_metrics, case_metrics, dice

__all__ = ["binary_metrics", "case_metrics", "dice", "evaluate_folders", "format_table", "write_results"]
