"""Module-level work and models for jobs in a worker process: picklable by reference, and free of streamlit
(a worker that unpickles them imports this module)."""

from __future__ import annotations

import gc
import os
import sys
import time

import torch
from torch import nn

from dsmooth_core import Cancelled


def report_and_return_pid(progress) -> int:
    progress.stage("reporting")
    for done in range(1, 4):
        progress(done, 3)
    return os.getpid()


def return_length(data: bytes, progress) -> int:
    progress(1, 1)
    return len(data)


def count_until_cancelled(total: int, progress) -> int:
    for done in range(1, total + 1):
        time.sleep(0.01)
        if progress(done, total):
            raise Cancelled(f"cancelled after {done} steps")
    return os.getpid()


def fail(message: str, progress) -> None:
    raise ValueError(message)


def die(code: int, progress) -> None:
    os._exit(code)


def frozen_objects(progress) -> int:
    return gc.get_freeze_count()


def loaded_modules(progress) -> list[str]:
    return sorted(sys.modules)


class HangsOnLargeBatches(nn.Module):
    """A linear classifier whose forward never returns for batches over ``limit`` (a hung user program)."""

    def __init__(self, limit: int, pixels: int = 3 * 32 * 32) -> None:
        super().__init__()
        self.limit = limit
        self.linear = nn.Linear(pixels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spins = 0
        while x.shape[0] > self.limit:  # spins for good, never reporting progress
            spins = spins + 1
        return self.linear(x.flatten(1))


class MeanBrightness(nn.Module):
    """Class 1 iff the image's mean pixel exceeds ``threshold``: its smoothed classifier is known exactly.

    The mean of Gaussian or Laplace noise over d = 3072 pixels is tiny, so the model certifies at the
    ceiling every time, and the exact l2 distance to its boundary is (mean - threshold) sqrt(d).
    ``delay`` seconds of sleep per call make a job slow enough to cancel midway.
    """

    def __init__(self, threshold: float) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.tensor(threshold))
        self.delay = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        score = 1000 * (x.mean(dim=(1, 2, 3)) - self.threshold)
        return torch.stack([-score, score], dim=1)


def export_never_returns(model: nn.Module, backend: str, progress) -> None:
    """In place of ``tasks.onnx_graph``: an upload whose export or graph probe spins for good, reporting nothing."""
    while True:
        time.sleep(0.05)


def lent_cores(progress) -> int:
    """The spare cores the worker lent this job's ONNX forwards."""
    from dsmooth_core.backends.spare_cores import lent

    return lent()
