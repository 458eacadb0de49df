"""Datasets: registered ones (through torchvision), image folders and array files; pixel
modes; validation; device-resident or streamed training batches."""

from pyrovae.data.base import PIXEL_MODES, DataOrigin, PixelMode, TrainingData
from pyrovae.data.batches import num_batches, shuffled_batches
from pyrovae.data.files import DATASETS, read_dataset, read_idx_dataset
from pyrovae.data.images import ImageData, binarize, load_data, make_image_data
from pyrovae.data.inputs import INPUT_KINDS, content_hash, open_dataset, resolve_dataset
from pyrovae.data.stream import StreamedImageData
from pyrovae.data.validate import validate_images, validate_labels

__all__ = [
    "DATASETS",
    "INPUT_KINDS",
    "PIXEL_MODES",
    "DataOrigin",
    "ImageData",
    "PixelMode",
    "StreamedImageData",
    "TrainingData",
    "binarize",
    "content_hash",
    "load_data",
    "make_image_data",
    "num_batches",
    "open_dataset",
    "read_dataset",
    "read_idx_dataset",
    "resolve_dataset",
    "shuffled_batches",
    "validate_images",
    "validate_labels",
]
