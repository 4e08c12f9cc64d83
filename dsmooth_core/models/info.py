"""Model metadata and a reproducible fingerprint of the weights, so results can name what produced them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is, which pixels it expects and where its weights came from.

    ``mean``/``std`` are applied inside :class:`~dsmooth_core.models.normalized.Normalized`, so every
    model in the project takes ``[0, 1]`` pixels; the defaults (0 and 1) mean "no normalisation".
    ``resize_size`` is the shorter side an image is resized to before the centre crop to
    ``input_shape``; ``None`` means resize straight to ``input_shape``.
    """

    name: str
    dataset: str
    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...]
    source: str
    weights_hash: str = ""
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    resize_size: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of outputs, i.e. classes the model scores."""
        return len(self.class_names)


def state_dict_hash(source: nn.Module | Mapping[str, object]) -> str:
    """SHA-256 over sorted keys, dtypes, shapes and raw bytes: equal weights give equal hashes anywhere."""
    state = source.state_dict() if isinstance(source, nn.Module) else source
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        if isinstance(value, torch.Tensor):
            tensor = value.detach().to("cpu").contiguous().reshape(-1)
            header = f"{key}\0{tensor.dtype}\0{tuple(value.shape)}\0"
            digest.update(header.encode())
            digest.update(tensor.view(torch.uint8).numpy().tobytes())
        else:
            digest.update(f"{key}\0{type(value).__name__}\0{value!r}\0".encode())
    return digest.hexdigest()
