"""Closed-form models for the certificate oracles of docs/MATH.md section 7."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from dsmooth_core import LowRankCovariance


class LinearClassifier(nn.Module):
    """f(x) = [w^T x > b] as two logits, so the smoothed probability has a closed form."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.register_buffer("w", w.flatten().double())
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1).double() @ self.w - self.b
        return torch.stack([-score, score], dim=1)


class PixelThreshold(nn.Module):
    """f(x) = [x_0 > t]: the exact l1 distance to its boundary is x_0 - t."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1)[:, 0].double() - self.t
        return torch.stack([-score, score], dim=1)


def dense_normalized(cov: LowRankCovariance) -> np.ndarray:
    """St as a dense numpy matrix, built independently of the low-rank shortcuts."""
    u = cov.eigenvectors.numpy()
    s_k = u @ np.diag(cov.eigenvalues.numpy() - cov.residual_variance) @ u.T
    s_k += cov.residual_variance * np.eye(cov.dim)
    if cov.normalization == "trace":
        return s_k * cov.dim / np.trace(s_k)
    _, logdet = np.linalg.slogdet(s_k)
    return s_k / np.exp(logdet / cov.dim)


def anisotropic_perturbations(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Perturbations with a strongly non-isotropic covariance (a few dominant directions)."""
    g = torch.Generator().manual_seed(seed)
    d = int(np.prod(shape))
    basis = torch.linalg.qr(torch.randn(d, 4, generator=g, dtype=torch.float64))[0]
    loads = torch.randn(n, 4, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0, 0.5])
    noise = 0.05 * torch.randn(n, d, generator=g, dtype=torch.float64)
    return (loads @ basis.T + noise + 0.2).reshape(n, *shape)


def diagonal_covariance(top: float = 4.0, residual: float = 1.0, shape=(1, 2, 2)) -> LowRankCovariance:
    """S = diag(top, residual, residual, ...): one eigen-direction along the first pixel."""
    d = math.prod(shape)
    u = torch.zeros(d, 1, dtype=torch.float64)
    u[0, 0] = 1.0
    return LowRankCovariance(
        shape=shape,
        eigenvectors=u,
        base_eigenvalues=torch.tensor([top], dtype=torch.float64),
        base_residual=residual,
        trace=top + (d - 1) * residual,
    )
