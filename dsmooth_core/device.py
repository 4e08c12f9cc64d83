"""Where to run: the fastest device this machine offers, and where a model already lives."""

from __future__ import annotations

import torch


def pick_device() -> torch.device:
    """cuda, then mps, then cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter or buffer (cpu for a stateless model)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the accelerator's out-of-memory error, which we recover from by halving the batch."""
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def generator_for(where: torch.nn.Module | torch.device | str, seed: int) -> torch.Generator:
    """A generator seeded with ``seed`` on the device a model runs on (or on ``where`` itself).

    Noise drawn from it is made where the forward pass runs, so a GPU never waits for host random
    numbers and nothing crosses the bus. Each device's generator has its own stream: the same seed
    draws different noise on a CPU and on a GPU, each run reproducible on its own device.
    """
    device = model_device(where) if isinstance(where, torch.nn.Module) else torch.device(where)
    return torch.Generator(device=device).manual_seed(seed)
