"""Smoothing distributions: each owns its sampling, its metric and its radius formula.

Keeping the three together in one object per method (MATH.md section 2) means ``certify`` never
needs to know which method it runs, and a radius can never be reported in the wrong metric.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from scipy.stats import norm

from dsmooth_core.covariance import LowRankCovariance

_PROBE_DRAWS = 4  # draws from a private generator that check a distribution's parameters once per call


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return value


def _check_p(p_lower: float) -> float:
    if not 0.5 < p_lower <= 1.0:
        raise ValueError(f"a certificate needs p_lower in (1/2, 1], got {p_lower}")
    return float(p_lower)


def _check_radius(radius: float) -> float:
    radius = float(radius)
    if not radius >= 0:  # also rejects NaN; +inf (p_lower = 1 under Laplace) passes
        raise ValueError(f"a certified radius must be >= 0, got {radius}")
    return radius


def _check_dim(dim: int) -> int:
    if int(dim) != dim or dim < 1:
        raise ValueError(f"the input dimension must be a positive integer, got {dim}")
    return int(dim)


class SmoothingNoise(ABC):
    """A smoothing distribution with the certificate it yields."""

    method: str  # display name of the certification method
    metric: str  # the distance the radius is measured in
    input_shape: tuple[int, ...] | None = None  # None: any image shape

    @abstractmethod
    def sample(
        self,
        count: int,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """``count`` noise draws of ``shape`` in pixel units, from ``generator`` only."""

    @abstractmethod
    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        """Size of a perturbation (C,H,W) or batch (B,C,H,W) in this method's metric."""

    @abstractmethod
    def radius(self, p_lower: float) -> float:
        """Certified radius for a lower bound ``p_lower`` > 1/2 on the top-class probability."""

    @abstractmethod
    def inscribed_l2_radius(self, radius: float, dim: int) -> float:
        """Radius of the largest l2 ball inside the certified region of ``radius``, in ``dim`` pixels.

        The l2 radius this certificate guarantees in every direction (MATH.md section 6).
        """

    @abstractmethod
    def inscribed_l1_radius(self, radius: float, dim: int) -> float:
        """Radius of the largest l1 ball inside the certified region of ``radius``, in ``dim`` pixels."""

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Reject inputs this distribution was not built for."""
        if self.input_shape is not None and tuple(shape) != self.input_shape:
            raise ValueError(
                f"{self.method} noise was built for inputs of shape {self.input_shape}, got {tuple(shape)}"
            )

    def check_finite_draws(self, shape: tuple[int, ...]) -> None:
        """Refuse parameters whose draws overflow float32: every noisy input would be inf or NaN."""
        draws = self.sample(_PROBE_DRAWS, tuple(shape), torch.Generator().manual_seed(0))
        if not torch.isfinite(draws).all():
            raise ValueError(
                f"{self.describe()} overflows float32: its noise draws are not finite numbers; use a smaller sigma"
            )

    def describe(self) -> str:
        return f"{self.method} ({self.metric})"


class IsotropicGaussian(SmoothingNoise):
    """RandSmooth (Cohen et al. 2019): N(0, sigma^2 I), certified in l2."""

    method = "RandSmooth"
    metric = "l2"

    def __init__(self, sigma: float) -> None:
        self.sigma = _positive("sigma", sigma)

    def sample(self, count, shape, generator, device="cpu", dtype=torch.float32):
        z = torch.randn((count, *shape), generator=generator, device=generator.device, dtype=dtype)
        return z.mul_(self.sigma).to(device)

    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(delta, ord=2, dim=tuple(range(-3, 0)))

    def radius(self, p_lower: float) -> float:
        return self.sigma * float(norm.ppf(_check_p(p_lower)))

    def inscribed_l2_radius(self, radius: float, dim: int) -> float:
        """The certified region is the l2 ball itself: R."""
        _check_dim(dim)
        return _check_radius(radius)

    def inscribed_l1_radius(self, radius: float, dim: int) -> float:
        """R: the l1 ball of radius R (hull of +-R e_i, each of l2 norm R) lies in the l2 ball of R."""
        _check_dim(dim)
        return _check_radius(radius)

    def describe(self) -> str:
        return f"RandSmooth, sigma={self.sigma:g} (l2)"


class Laplace(SmoothingNoise):
    """LSmooth (Teng et al. 2020): iid Laplace(0, scale), certified in l1."""

    method = "LSmooth"
    metric = "l1"

    def __init__(self, scale: float) -> None:
        self.scale = _positive("scale", scale)

    @classmethod
    def from_sigma(cls, sigma: float) -> Laplace:
        """Laplace with the per-pixel variance of N(0, sigma^2): scale = sigma / sqrt(2)."""
        return cls(_positive("sigma", sigma) / math.sqrt(2))

    @property
    def sigma(self) -> float:
        """Per-pixel standard deviation, the quantity matched against the Gaussian methods."""
        return self.scale * math.sqrt(2)

    def sample(self, count, shape, generator, device="cpu", dtype=torch.float32):
        # One uniform per pixel gives both the sign (which half of (0, 1] it falls in) and an independent
        # uniform v on (0, 1] within that half, so -log(v) is Exp(1) and never infinite. This costs one
        # uniform and one log per pixel, a third of torch's exponential_ pair on a CPU.
        w = torch.rand((count, *shape), generator=generator, device=generator.device, dtype=dtype).neg_().add_(1)
        upper = (w > 0.5).to(dtype)
        magnitude = w.mul_(2).sub_(upper).log_().neg_()
        return magnitude.mul_(upper.mul_(2 * self.scale).sub_(self.scale)).to(device)

    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(delta, ord=1, dim=tuple(range(-3, 0)))

    def radius(self, p_lower: float) -> float:
        p = _check_p(p_lower)
        return math.inf if p == 1.0 else -self.scale * math.log(2 * (1 - p))

    def inscribed_l2_radius(self, radius: float, dim: int) -> float:
        """R / sqrt(d), since ``||d||_1 <= sqrt(d) ||d||_2`` with equality along (1, ..., 1)."""
        return _check_radius(radius) / math.sqrt(_check_dim(dim))

    def inscribed_l1_radius(self, radius: float, dim: int) -> float:
        """The certified region is the l1 ball itself: R."""
        _check_dim(dim)
        return _check_radius(radius)

    def describe(self) -> str:
        return f"LSmooth, scale={self.scale:g} (sigma={self.sigma:g} matched in variance, l1)"


class AnisotropicGaussian(SmoothingNoise):
    """DSmooth: N(0, sigma^2 St), St the det-normalized threat covariance, certified in its metric."""

    method = "DSmooth"
    metric = "mahalanobis"

    def __init__(self, sigma: float, covariance: LowRankCovariance) -> None:
        self.sigma = _positive("sigma", sigma)
        self.covariance = covariance
        self.input_shape = tuple(covariance.shape)

    def sample(self, count, shape, generator, device="cpu", dtype=torch.float32):
        self.check_shape(shape)
        return self.covariance.sample(count, generator, device, dtype).mul_(self.sigma)

    def distance(self, delta: torch.Tensor) -> torch.Tensor:
        return self.covariance.mahalanobis(delta)

    def radius(self, p_lower: float) -> float:
        return self.sigma * float(norm.ppf(_check_p(p_lower)))

    def _check_pixels(self, dim: int) -> None:
        if _check_dim(dim) != self.covariance.dim:
            raise ValueError(f"{self.method} noise was built for {self.covariance.dim} pixels, got dim={dim}")

    def inscribed_l2_radius(self, radius: float, dim: int) -> float:
        """R sqrt(mu_min): the ellipsoid's shortest semi-axis, along the eigenvector of mu_min."""
        self._check_pixels(dim)
        return _check_radius(radius) * math.sqrt(self.covariance.mu_min)

    def inscribed_l1_radius(self, radius: float, dim: int) -> float:
        """R / sqrt(max_i (St^-1)_ii): exact, the worst vertex r e_i sits on the ellipsoid."""
        self._check_pixels(dim)
        return _check_radius(radius) * self.covariance.l1_radius_factor()

    def linf_radius_lower_bound(self, radius: float) -> float:
        return radius * math.sqrt(self.covariance.mu_min / self.covariance.dim)

    def describe(self) -> str:
        return f"DSmooth, sigma={self.sigma:g}, k={self.covariance.k} (Mahalanobis of St)"


METHODS = ("dsmooth", "randsmooth", "lsmooth")


def make_noise(method: str, sigma: float, covariance: LowRankCovariance | None = None) -> SmoothingNoise:
    """Build a method's noise at per-pixel standard deviation ``sigma`` (Laplace matched in variance)."""
    key = method.lower()
    if key == "randsmooth":
        return IsotropicGaussian(sigma)
    if key == "lsmooth":
        return Laplace.from_sigma(sigma)
    if key == "dsmooth":
        if covariance is None:
            raise ValueError("DSmooth needs a threat profile (a fitted covariance)")
        return AnisotropicGaussian(sigma, covariance)
    raise ValueError(f"unknown method '{method}': choose one of {', '.join(METHODS)}")
