"""Fitting an image to a model's input, in pixel space and before any smoothing noise."""

from __future__ import annotations

import torch
from PIL import Image

from dsmooth_core.data.transforms import to_model_input
from dsmooth_core.models.info import ModelInfo


def prepare_image(img: Image.Image | torch.Tensor, info: ModelInfo) -> torch.Tensor:
    """A ``(C, H, W)`` tensor in ``[0, 1]`` of the model's input shape.

    CIFAR models get a plain antialiased resize to 32x32; ImageNet models get the shorter side
    resized to ``info.resize_size`` and a centre crop, as their weights were evaluated.
    """
    return to_model_input(img, info.input_shape, resize_size=info.resize_size)
