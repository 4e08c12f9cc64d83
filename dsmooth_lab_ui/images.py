"""Turning tensors into uint8 pictures for display (display only: nothing here feeds a model)."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """A (C,H,W) tensor in [0,1] (or an (H,W,C) uint8 array) as an (H,W,C) uint8 array, clipped."""
    if isinstance(x, np.ndarray) and x.dtype == np.uint8:
        return x
    t = torch.as_tensor(x).detach().to("cpu", torch.float32)
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    array = t.clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.ascontiguousarray(array)


def signed_to_uint8(delta: torch.Tensor, scale: float | None = None) -> tuple[np.ndarray, float]:
    """A signed (C,H,W) map shown around mid-grey: 0.5 + delta / (2 scale), clipped to [0, 1].

    ``scale`` defaults to ``max |delta|`` (so the strongest pixel reaches black or white); the
    amplification factor ``1 / (2 scale)`` is returned for the caption.
    """
    t = torch.as_tensor(delta).detach().to("cpu", torch.float32)
    if scale is None:
        scale = float(t.abs().max())
    scale = scale if scale > 0 else 1.0
    return to_uint8(0.5 + t / (2.0 * scale)), 1.0 / (2.0 * scale)


def eigen_images(eigenvectors: torch.Tensor, shape: tuple[int, ...], count: int) -> list[np.ndarray]:
    """The first ``count`` columns of a (d, k) eigenvector matrix as signed pictures (sign is arbitrary)."""
    count = min(count, eigenvectors.shape[1])
    return [signed_to_uint8(eigenvectors[:, i].reshape(shape))[0] for i in range(count)]


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement, so 32x32 thumbnails stay crisp on screen."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def drawable(image: np.ndarray, max_ratio: int = 4) -> np.ndarray:
    """An (H, W, 3) uint8 picture padded with white to at most ``max_ratio``:1, so a thumbnail of any
    width keeps at least a few pixels on its short side (a 200x1 upload would otherwise be 0 px high)."""
    height, width = image.shape[:2]
    target_h, target_w = max(height, -(-width // max_ratio)), max(width, -(-height // max_ratio))
    if (target_h, target_w) == (height, width):
        return image
    canvas = np.full((target_h, target_w, *image.shape[2:]), 255, dtype=image.dtype)
    top, left = (target_h - height) // 2, (target_w - width) // 2
    canvas[top : top + height, left : left + width] = image
    return canvas
