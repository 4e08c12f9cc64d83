"""An optional compiled forward for long certification runs (``torch.compile``), off by default.

Measured on the bundled ResNet-20 (README, "Speed"): on this project's CPU the compiled forward at a
fixed batch of 500 is 1.5-1.6x the eager ``channels_last`` forward, but the first compilation takes
over a minute, which an interactive app cannot hide; a CLI run over many images earns it back. Only batches
of exactly ``batch_size`` go through the compiled graph, so it is compiled once for a static shape;
the odd sizes (the contract's probes, n0, the last partial batch) run eagerly.
"""

from __future__ import annotations

import torch
from torch import nn

from dsmooth_core.contract import check_count
from dsmooth_core.models.info import ModelInfo


class CompiledForward(nn.Module):
    """``model`` whose batches of ``batch_size`` run through ``torch.compile``; everything else as before."""

    def __init__(self, model: nn.Module, batch_size: int) -> None:
        super().__init__()
        self.model = model
        self.batch_size = int(batch_size)
        self._compiled = torch.compile(model, dynamic=False)

    @property
    def info(self) -> ModelInfo:
        """The wrapped model's description: name, input shape, classes."""
        return self.model.info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == self.batch_size and not torch.is_grad_enabled():
            return self._compiled(x)
        return self.model(x)


def compiled_forward(model: nn.Module, batch_size: int) -> CompiledForward:
    """Wrap ``model`` for certification at ``batch_size`` (compiled lazily, on the first full batch)."""
    return CompiledForward(model, check_count("batch_size", batch_size))
