"""A batch size that fits the accelerator: measured on the model, then scaled to the free memory.

Certification holds, per sample, the model's activations plus the noise and the noisy copy, so the
batch that fits follows from one small probe forward. Half the free memory is left as margin for the
allocator and whatever else runs; if a batch still runs out of memory, certify halves it.
"""

from __future__ import annotations

import math

import torch

from dsmooth_core.contract import evaluating
from dsmooth_core.device import model_device
from dsmooth_core.layout import in_layout, input_format

CPU_BATCH = 200  # the app's CPU default: a batch takes well under a second with the bundled model
PROBE = 64  # samples in the probe forward
MAX_BATCH = 50_000  # beyond this a batch's progress steps get too coarse to follow


def batch_that_fits(free_bytes: int, bytes_per_sample: int, fraction: float = 0.5) -> int:
    """The largest round batch using at most ``fraction`` of ``free_bytes``, between 1 and MAX_BATCH.

    Rounded down to a multiple of 100 (of 10 below 1,000) so the number reads well in the app.
    """
    if bytes_per_sample <= 0:
        raise ValueError(f"bytes_per_sample must be positive, got {bytes_per_sample}")
    raw = min(int(free_bytes * fraction) // bytes_per_sample, MAX_BATCH)
    step = 100 if raw >= 1000 else 10 if raw >= 100 else 1
    return max(raw // step * step, 1)


def sample_bytes(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """Peak CUDA memory per sample of a probe forward, plus the noise and the noisy input certify holds."""
    device = model_device(model)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), evaluating(model):  # grey, like the contract's probe: no RNG is consumed
        model(in_layout(torch.full((PROBE, *shape), 0.5, device=device), input_format(model)))
    peak = torch.cuda.max_memory_allocated(device) - base
    return math.ceil(peak / PROBE) + 2 * 4 * math.prod(shape)


def suggested_batch_size(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    """A batch for certify on the model's device: measured on CUDA, the CPU default elsewhere."""
    device = model_device(model)
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    return batch_that_fits(free, sample_bytes(model, shape))
