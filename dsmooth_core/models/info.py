"""Model metadata and a reproducible fingerprint of the weights, so results can name what produced them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is, which pixels it expects and where its weights came from.

    ``mean``/``std`` are applied inside :class:`~dsmooth_core.models.normalized.Normalized`, so every
    model in the project takes ``[0, 1]`` pixels; the defaults (0 and 1) mean "no normalisation".
    ``resize_size`` is the shorter side an image is resized to before the centre crop to
    ``input_shape``; ``None`` means resize straight to ``input_shape``. ``architecture`` names the
    network built (a registry architecture, or the program format of a TorchScript/.pt2 file) and
    ``code_hash`` is the sha256 of such a program file ("" for state-dict models, whose code is ours).
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
    architecture: str = ""
    code_hash: str = ""

    @property
    def identity(self) -> str:
        """sha256 over everything that changes the model's outputs (not its display name or source text).

        Two models with equal identities give the same logits for the same pixels, so a result keyed by
        it can never be another model's.
        """
        fields = {
            "weights_hash": self.weights_hash,
            "code_hash": self.code_hash,
            "architecture": self.architecture,
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "input_shape": [int(v) for v in self.input_shape],
            "class_names": list(self.class_names),
            "resize_size": self.resize_size,
        }
        return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

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


def file_sha256(data: bytes | str | Path) -> str:
    """sha256 of a file's bytes: a program file's ``code_hash``, the checksum a model card shows."""
    digest = hashlib.sha256()
    if isinstance(data, bytes):
        digest.update(data)
    else:
        with Path(data).open("rb") as f:
            for block in iter(lambda: f.read(2**20), b""):
                digest.update(block)
    return digest.hexdigest()
