"""Data: reading images with their geometry, datasets, normalisation, slice stacks, augmentation."""

from ..errors import DatasetError, ImageReadError
from .augment import AugmentConfig, StackAugmenter
from .dataset import Case, Dataset, load_dataset, split_cases
from .io import Volume, read_label, read_volume, slice_axis, write_label
from .loader import StackDataset
from .normalize import ChannelNormalization, Normalization
from .preprocess import preprocess_dataset
from .slices import stack_indices

__all__ = [
    "AugmentConfig",
    "Case",
    "Dataset",
    "DatasetError",
    "ImageReadError",
    "ChannelNormalization",
    "Normalization",
    "StackAugmenter",
    "StackDataset",
    "Volume",
    "load_dataset",
    "preprocess_dataset",
    "read_label",
    "read_volume",
    "slice_axis",
    "split_cases",
    "stack_indices",
    "write_label",
]
