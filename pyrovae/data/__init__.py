"""Datasets: IDX files located and read through torchvision, pixel modes, index-sliced batches."""

from pyrovae.data.batches import num_batches, shuffled_batches
from pyrovae.data.files import DATASETS, read_idx_dataset
from pyrovae.data.images import PIXEL_MODES, ImageData, binarize, load_data, make_image_data

__all__ = [
    "DATASETS",
    "PIXEL_MODES",
    "ImageData",
    "binarize",
    "load_data",
    "make_image_data",
    "num_batches",
    "read_idx_dataset",
    "shuffled_batches",
]
