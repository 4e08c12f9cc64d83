"""How many noise draws this machine affords: the forward's measured rate turned into an n.

Why: the radius ceiling grows with n (sigma 0.25, alpha 0.001: 0.616 at n = 1,000, 0.708 at 3,000,
0.80 at 10,000), so the largest n that still answers in a few seconds is what teaches; and that n
depends on the machine, the backend and the threads, so it is measured, not assumed.
"""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from dsmooth_core.contract import check_count
from dsmooth_core.device import model_device

CERTIFY_EFFICIENCY = 0.9  # certify's draws per second over the bare forward's (0.93-0.99 measured on CPU)


@torch.inference_mode()
def forward_rate(model: nn.Module, batch: int = 200, repeats: int = 3) -> float:
    """Images per second of ``model``'s gradient-free forward at ``batch`` (median of ``repeats``, after a warm-up)."""
    check_count("batch", batch)
    x = torch.full((batch, *model.info.input_shape), 0.5, device=model_device(model))
    model(x)
    times = []
    for _ in range(check_count("repeats", repeats)):
        start = time.perf_counter()
        model(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def affordable_n(rate: float, seconds: float = 5.0, methods: int = 3, n0: int = 100) -> int:
    """The largest n, in hundreds, for which ``methods`` certificates of ``n0 + n`` draws take about
    ``seconds`` at a forward ``rate`` (images/s); 0 when not even n = 100 fits."""
    draws = rate * CERTIFY_EFFICIENCY * seconds / methods - n0
    return max(0, int(draws // 100) * 100)
