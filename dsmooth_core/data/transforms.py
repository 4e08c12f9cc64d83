"""Turning an image of any size into exactly the pixels a model takes.

This happens in pixel space before any noise is added, so the smoothing noise is drawn at the
model's resolution.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Inputs up to this size (CIFAR-like thumbnails) are resized whole: a crop would cut the object.
DIRECT_RESIZE_MAX = 64
# Ratio of resize to crop in the usual ImageNet evaluation (256 -> 224).
CROP_RATIO = 224 / 256
_LUMA = (0.299, 0.587, 0.114)


def to_model_input(
    img: Image.Image | torch.Tensor,
    input_shape: tuple[int, int, int],
    resize_size: int | None = None,
) -> torch.Tensor:
    """A ``(C, H, W)`` float tensor in ``[0, 1]`` matching ``input_shape``.

    Small inputs (at most 64 px) are resized straight to ``(H, W)`` with antialiasing. Larger ones
    have their shorter side resized to ``resize_size`` (default ``H / 0.875``, i.e. 256 for 224)
    and are then centre-cropped. Tensors are ``(C, H, W)`` or ``(H, W)``, uint8 or float in ``[0, 1]``;
    other values are refused (the final clamp only removes the resize's overshoot).
    """
    channels, height, width = input_shape
    x = _to_float_chw(img, channels)
    if resize_size is None and max(height, width) > DIRECT_RESIZE_MAX:
        resize_size = int(min(height, width) / CROP_RATIO)
    if resize_size is None:
        x = _resize(x, height, width)
    else:
        if resize_size < max(height, width):
            raise ValueError(f"resize size {resize_size} is smaller than the {height}x{width} crop")
        src_h, src_w = x.shape[-2:]
        if src_h <= src_w:
            x = _resize(x, resize_size, int(resize_size * src_w / src_h))
        else:
            x = _resize(x, int(resize_size * src_h / src_w), resize_size)
        top = round((x.shape[-2] - height) / 2)
        left = round((x.shape[-1] - width) / 2)
        x = x[:, top : top + height, left : left + width]
    return x.clamp(0.0, 1.0).contiguous()


def _to_float_chw(img: Image.Image | torch.Tensor, channels: int) -> torch.Tensor:
    if isinstance(img, Image.Image):
        array = np.asarray(img.convert("L" if channels == 1 else "RGB"))
        x = torch.from_numpy(array.copy())
        x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    else:
        x = img.detach().cpu()
        x = x.unsqueeze(0) if x.dim() == 2 else x
        if x.dim() != 3:
            raise ValueError(f"expected an image tensor (C, H, W) or (H, W), got shape {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else _check_unit_range(x.float())
    if x.shape[0] == channels:
        return x
    if x.shape[0] == 1 and channels == 3:
        return x.expand(3, -1, -1)
    if x.shape[0] == 3 and channels == 1:
        return torch.einsum("c,chw->hw", torch.tensor(_LUMA), x).unsqueeze(0)
    raise ValueError(f"cannot turn a {x.shape[0]}-channel image into {channels} channels")


def _check_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Refuse pixels outside [0, 1] rather than clamp them: an image in [0, 255] would turn white silently."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError("the image holds NaN or infinite values; pixels must be finite numbers in [0, 1]")
    low, high = float(x.min()), float(x.max())
    if low < 0 or high > 1:
        hint = " (an image in [0, 255]? divide it by 255, or pass it as uint8)" if high > 1 else ""
        raise ValueError(f"a float image must hold pixels in [0, 1], got values from {low:.4g} to {high:.4g}{hint}")
    return x


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if tuple(x.shape[-2:]) == (height, width):
        return x
    return F.interpolate(x[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]
