"""Datasets without torchvision: readers, normalisation, augmentation, query views."""

from .dataset import Dataset, DatasetError, view_specs
from .registry import DATASETS, load_dataset

__all__ = ["DATASETS", "Dataset", "DatasetError", "load_dataset", "view_specs"]
