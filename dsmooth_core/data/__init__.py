"""Data sets, image folders and uploads, all delivered as ``[0, 1]`` pixels for the models."""

from dsmooth_core.data.cifar10 import load_cifar10
from dsmooth_core.data.errors import DataUnavailableError, UploadError
from dsmooth_core.data.folders import LabelledImage, load_image_folder, load_imagenet_sample
from dsmooth_core.data.imageset import ImageSet
from dsmooth_core.data.paths import DATA_DIR_ENV, data_dir
from dsmooth_core.data.subsets import balanced_subset
from dsmooth_core.data.transforms import to_model_input
from dsmooth_core.data.uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, Upload, load_upload, read_upload

__all__ = [
    "DATA_DIR_ENV",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_PIXELS",
    "DataUnavailableError",
    "ImageSet",
    "LabelledImage",
    "Upload",
    "UploadError",
    "balanced_subset",
    "data_dir",
    "load_cifar10",
    "load_image_folder",
    "load_imagenet_sample",
    "load_upload",
    "read_upload",
    "to_model_input",
]
