"""Model files as a third party would hand them over: TorchScript, torch.export and a state dict, plus broken ones."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from dsmooth_core.models import build_architecture


class ThirdPartyNet(nn.Module):
    """A small CIFAR-10-sized network that normalizes its own input, as someone else's code might."""

    def __init__(self, outputs: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.head = nn.Linear(32, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x - self.mean))


def _net(outputs: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return ThirdPartyNet(outputs).eval()


def torchscript_bytes(outputs: int = 10) -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_net(outputs)), buffer)
    return buffer.getvalue()


class _NaNHead(nn.Module):
    """Right shape, useless values: what a model broken by a bad conversion can return."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], 10), float("nan"))


def nan_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_NaNHead()), buffer)
    return buffer.getvalue()


def export_bytes() -> bytes:
    batch = torch.export.Dim("batch")
    program = torch.export.export(_net(), (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


def state_dict_bytes(architecture: str = "resnet20") -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save(build_architecture(architecture).state_dict(), buffer)
    return buffer.getvalue()


class _Planted:
    """Unpickling this would create ``marker``: the proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def code_pickle_bytes(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(1), "payload": _Planted(marker)}, buffer)
    return buffer.getvalue()
