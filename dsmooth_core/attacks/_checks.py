"""Argument checks shared by the attacks, so every bad value fails early with the same wording."""

from __future__ import annotations

import math

import torch


def check_positive(name: str, value: float) -> float:
    """A radius or step size: a positive finite number."""
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def check_count(name: str, value: int) -> int:
    """A budget or batch size: an integer of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_p_init(p_init: float) -> float:
    """Square Attack's initial fraction of pixels changed per step."""
    p_init = float(p_init)
    if not 0 < p_init <= 1:
        raise ValueError(f"p_init must lie in (0, 1], got {p_init}")
    return p_init


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """Images (B, C, H, W) with B >= 1 and one integer label each."""
    if x.dim() != 4 or x.shape[0] < 1:
        raise ValueError(f"x must be a non-empty batch (B, C, H, W), got shape {tuple(x.shape)}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must hold one label per image, shape ({x.shape[0]},), got {tuple(y.shape)}")
