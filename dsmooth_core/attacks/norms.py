"""Sizes of perturbations in the metrics the certificates speak (docs/MATH.md section 6)."""

from __future__ import annotations

import torch


def perturbation_norms(delta: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image l_inf, l2 and l1 norms of a batch of perturbations (B, ...), each of shape (B,)."""
    flat = delta.flatten(1)
    return {
        "linf": flat.abs().amax(dim=1),
        "l2": torch.linalg.vector_norm(flat, ord=2, dim=1),
        "l1": flat.abs().sum(dim=1),
    }
