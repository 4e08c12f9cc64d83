"""Memory layout: convolutional nets run in ``channels_last`` on the devices where that layout is faster.

oneDNN (CPU) and cuDNN (CUDA) convolutions work natively on NHWC tensors; NCHW inputs and weights
are reordered on every call. Measured on the bundled ResNet-20 (README, "Speed"), the same weights
run faster in ``channels_last`` on a CPU, and NVIDIA recommends it for convolutions on tensor-core
GPUs. Programs (TorchScript, torch.export) keep the layout they were saved with: their graph is
fixed and converting their weights is not ours to do.
"""

from __future__ import annotations

import torch
from torch import nn

from dsmooth_core.device import model_device

# Device types whose convolution kernels run fastest on channels_last tensors.
CHANNELS_LAST_DEVICES = frozenset({"cpu", "cuda"})


def _is_program(model: nn.Module) -> bool:
    """A TorchScript or torch.export program (the latter's graph module wrapped by ``models.user``)."""
    return any(isinstance(m, (torch.jit.ScriptModule, torch.fx.GraphModule)) for m in model.modules())


def preferred_format(model: nn.Module, device: torch.device | str) -> torch.memory_format:
    """The layout ``model`` should run in on ``device``: the rule behind every model the lab loads.

    ``channels_last`` for a plain module with 2-D convolutions on a CPU or CUDA device; contiguous
    for everything else (fully connected nets gain nothing, other devices were not measured).
    """
    if torch.device(device).type not in CHANNELS_LAST_DEVICES or _is_program(model):
        return torch.contiguous_format
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return torch.channels_last if has_conv else torch.contiguous_format


def in_fastest_layout(model: nn.Module, device: torch.device | str | None = None) -> nn.Module:
    """``model`` (in place) in its preferred layout on ``device`` (default: where it lives)."""
    fmt = preferred_format(model, model_device(model) if device is None else device)
    if fmt == torch.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def input_format(model: nn.Module) -> torch.memory_format:
    """The layout ``model``'s input batches should have: channels_last when its convolution weights are.

    Read from the weights themselves, so a model converted by its owner is honoured as well.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            weight = module.weight
            if not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
                return torch.channels_last
    return torch.contiguous_format


def in_layout(batch: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``batch`` with the same values in layout ``fmt`` (a copy only when the layout differs)."""
    return batch.contiguous(memory_format=fmt) if batch.dim() == 4 else batch
