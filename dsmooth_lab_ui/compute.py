"""Small model calls the pages need besides ``dsmooth_core``'s certify and attack (no streamlit).

They only run the base model: class probabilities of one image, and the votes and per-pixel noise
energy under a smoothing distribution (the Noise explorer's histogram and variance map).
"""

from __future__ import annotations

import numpy as np
import torch

from dsmooth_core import SmoothingNoise
from dsmooth_core.contract import check_finite_logits
from dsmooth_core.device import model_device
from dsmooth_core.layout import in_layout, input_format
from dsmooth_core.progress import ProgressCallback, report


@torch.inference_mode()
def class_probabilities(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Softmax of the base model's logits for one (C,H,W) image in [0, 1]; NaN logits are refused, not shown."""
    logits = model(x.to(model_device(model), torch.float32).unsqueeze(0))
    check_finite_logits(model, logits)
    return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()


@torch.inference_mode()
def noise_votes(
    model: torch.nn.Module,
    x: torch.Tensor,
    noise: SmoothingNoise | None,
    count: int,
    batch_size: int,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
) -> dict[str, np.ndarray]:
    """Votes of the base model on ``count`` noisy copies of ``x`` (unclamped, as certified), and the
    empirical per-pixel noise variance summed over channels (H, W). ``noise=None`` means no noise.
    """
    device = model_device(model)
    layout = input_format(model)
    x = x.to(device, torch.float32)
    counts = torch.zeros(len(model.info.class_names), dtype=torch.long)
    total = torch.zeros(x.shape, dtype=torch.float64)
    total_sq = torch.zeros(x.shape, dtype=torch.float64)
    done = 0
    while done < count:
        size = min(batch_size, count - done)
        if noise is None:
            eps = torch.zeros((size, *x.shape), device=device)
        else:
            eps = noise.sample(size, tuple(x.shape), generator, device)
        logits = model(in_layout(x.unsqueeze(0) + eps, layout))
        check_finite_logits(model, logits)  # a NaN row would count as a vote for class 0
        votes = logits.argmax(dim=1).cpu()
        counts += torch.bincount(votes, minlength=len(counts))
        e64 = eps.to("cpu", torch.float64)
        total += e64.sum(0)
        total_sq += e64.pow(2).sum(0)
        done += size
        report(progress, done, count)
    mean = total / count
    variance = (total_sq / count - mean.pow(2)).clamp(min=0)
    return {"counts": counts.numpy(), "variance_map": variance.sum(0).numpy()}


def noise_sample(noise: SmoothingNoise | None, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """One noise draw of ``shape`` (zeros for ``noise=None``, i.e. sigma = 0), on the CPU."""
    if noise is None:
        return torch.zeros(shape)
    return noise.sample(1, shape, torch.Generator().manual_seed(seed), "cpu")[0]
