"""Exact projections onto the certified regions, for searching perturbations inside a certificate.

The l2 and l1 projections are the Euclidean ones. The Mahalanobis ellipsoid {d : d^T St^-1 d <= R^2}
is handled in whitened coordinates: with ``d = St^(1/2) z`` it is the l2 ball ``||z||_2 <= R``,
so ``St^(1/2) project_l2(St^(-1/2) v, R)`` is the exact nearest point of the ellipsoid in the
metric of St (the map z -> St^(1/2) z is an isometry between that metric and l2). It is not the
Euclidean nearest point; a search run in whitened coordinates never needs that one. Both maps cost
O(d k) with the low-rank form of St and never form a d x d matrix.
"""

from __future__ import annotations

import math

import torch

from dsmooth_core.covariance import LowRankCovariance


def _check_radius(radius: float) -> float:
    radius = float(radius)
    if not (radius >= 0 and math.isfinite(radius)):
        raise ValueError(f"a projection radius must be finite and >= 0, got {radius}")
    return radius


def project_l2(v: torch.Tensor, radius: float) -> torch.Tensor:
    """Nearest point of the l2 ball of ``radius`` to ``v`` (any shape, taken as one vector)."""
    radius = _check_radius(radius)
    norm = float(torch.linalg.vector_norm(v))
    return v.clone() if norm <= radius else v * (radius / norm)


def project_l1(v: torch.Tensor, radius: float) -> torch.Tensor:
    """Nearest point of the l1 ball of ``radius`` to ``v`` (any shape, taken as one vector).

    Sorting-based simplex projection (Duchi et al. 2008): soft-threshold |v| at the theta that
    brings the l1 norm down to ``radius``; O(d log d).
    """
    radius = _check_radius(radius)
    flat = v.reshape(-1)
    magnitude = flat.abs()
    if float(magnitude.sum()) <= radius:
        return v.clone()
    if radius == 0:
        return torch.zeros_like(v)
    ordered = magnitude.sort(descending=True).values
    cumulative = ordered.cumsum(0) - radius
    ranks = torch.arange(1, flat.numel() + 1, dtype=flat.dtype, device=flat.device)
    # The last index where the sorted magnitude still exceeds the running threshold fixes theta.
    last = int((ordered * ranks > cumulative).nonzero().max())
    theta = cumulative[last] / (last + 1)
    return (flat.sign() * (magnitude - theta).clamp(min=0)).reshape(v.shape)


class Whitening:
    """The maps z -> St^(1/2) z (``color``) and d -> St^(-1/2) d (``whiten``) of a low-rank St.

    St = (U diag(lambda) U^T + rho^2 (I - U U^T)) / c, c the covariance's normalizer (det or trace), so
    its powers act as ``lambda^p`` on the span of U and as ``rho^(2p)`` on the rest: O(d k) per vector,
    differentiable, float64.
    """

    def __init__(self, covariance: LowRankCovariance) -> None:
        self.shape = tuple(covariance.shape)
        self.eigenvectors = covariance.eigenvectors.to(torch.float64)
        self.eigenvalues = covariance.eigenvalues.to(torch.float64) / covariance.normalizer
        self.residual = covariance.residual_variance / covariance.normalizer

    def _power(self, v: torch.Tensor, power: float) -> torch.Tensor:
        flat = v.reshape(-1).to(torch.float64)
        coeffs = self.eigenvectors.T @ flat
        scale = self.residual**power
        out = scale * flat + self.eigenvectors @ ((self.eigenvalues.pow(power) - scale) * coeffs)
        return out.reshape(v.shape)

    def color(self, z: torch.Tensor) -> torch.Tensor:
        """St^(1/2) z: a whitened vector back in pixel space."""
        return self._power(z, 0.5)

    def whiten(self, delta: torch.Tensor) -> torch.Tensor:
        """St^(-1/2) delta, whose l2 norm is delta's Mahalanobis distance in the metric of St."""
        return self._power(delta, -0.5)

    def project(self, delta: torch.Tensor, radius: float) -> torch.Tensor:
        """Nearest point of the ellipsoid {d : d^T St^-1 d <= radius^2} to ``delta`` in the metric of St."""
        return self.color(project_l2(self.whiten(delta), radius)).to(delta.dtype)
