"""Wrapper that moves per-channel normalisation inside the model.

Smoothing adds noise in pixel space, so the noise scale sigma must be measured on ``[0, 1]`` pixels;
putting the normalisation inside the model keeps every caller in that space.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from dsmooth_core.contract import ModelRuntimeError, first_line, is_script_failure
from dsmooth_core.device import is_out_of_memory
from dsmooth_core.models.info import ModelInfo, state_dict_hash


class Normalized(nn.Module):
    """Takes ``[0, 1]`` pixels ``(B, C, H, W)``, normalises them per channel, then runs ``net``."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, net: nn.Module, info: ModelInfo) -> None:
        super().__init__()
        channels = info.input_shape[0]
        if len(info.mean) != channels or len(info.std) != channels:
            raise ValueError(f"mean/std need {channels} values for input shape {info.input_shape}")
        if not all(math.isfinite(v) for v in (*info.mean, *info.std)) or min(info.std) <= 0:
            raise ValueError(f"mean must be finite and std finite and positive, got mean {info.mean}, std {info.std}")
        self.net = net
        self.info = info
        self.register_buffer("mean", torch.tensor(info.mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(info.std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of ``[0, 1]`` images."""
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected a (B, {self.mean.shape[1]}, H, W) batch, got {tuple(x.shape)}")
        try:
            return self.net((x - self.mean) / self.std)
        except Exception as exc:
            if not is_script_failure(exc) or is_out_of_memory(exc):  # out of memory: the caller halves its batch
                raise
            raise ModelRuntimeError(f"model '{self.info.name}' failed: {first_line(exc)}") from exc


def wrap(net: nn.Module, info: ModelInfo) -> Normalized:
    """Wrap ``net`` for inference: eval mode, no gradients, ``info.weights_hash`` filled in if empty."""
    if not info.weights_hash:
        info = dataclasses.replace(info, weights_hash=state_dict_hash(net))
    model = Normalized(net, info)
    model.eval()
    model.requires_grad_(False)
    return model
