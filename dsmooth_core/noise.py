"""Smoothing distributions: each owns its sampling, its metric and its radius formula.

Keeping the three together in one object per method (docs/MATH.md section 2) means ``certify`` never
needs to know which method it runs, and a radius can never be reported in the wrong metric.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from scipy.stats import norm

from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.device import generator_for

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


# Directions measured at once when tracing a region's slice (bounds memory for ImageNet-sized d).
_DIRECTION_CHUNK = 32


class SmoothingNoise(ABC):
    """A smoothing distribution with the certificate it yields, and everything that names or draws it."""

    key: str  # the method's name in records, CLI choices and settings
    name: str  # display name of the certification method
    color: str  # one colour per method in every chart
    dash: str  # its line style where several curves share a colour
    metric: str  # the distance the radius is measured in
    metric_short: str  # the metric in legends
    metric_label: str  # the metric in tables and slice pictures
    region_name: str  # what the certified region is
    needs_profile: bool = False  # shaped by a threat profile (a fitted covariance), with a rank k
    input_shape: tuple[int, ...] | None = None  # None: any image shape

    sigma: float  # the per-pixel standard deviation the method is set by

    def identity(self) -> tuple[str, float, str]:
        """What determines this noise's draws and radii: (method key, sigma, covariance content hash or "").

        A certificate stores it, so it is re-levelled, compared or audited only with the same noise.
        """
        covariance = getattr(self, "covariance", None)
        return (self.key, float(self.sigma), "" if covariance is None else covariance.content_hash())

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

        The l2 radius this certificate guarantees in every direction (docs/MATH.md section 6).
        """

    @abstractmethod
    def inscribed_l1_radius(self, radius: float, dim: int) -> float:
        """Radius of the largest l1 ball inside the certified region of ``radius``, in ``dim`` pixels."""

    @abstractmethod
    def linf_lower_bound(self, radius: float, dim: int) -> float:
        """An l_inf ball of this radius lies inside the certified region of ``radius`` (docs/MATH.md section 6)."""

    def equal_volume_l2_radius(self, radius: float, dim: int) -> float:
        """Radius of the l2 ball with the certified region's volume: compares sizes, guarantees nothing.

        R for the l2 ball itself and for DSmooth's ellipsoid (det St = 1); the l1 ball overrides it.
        """
        _check_dim(dim)
        return _check_radius(radius)

    def top_direction(self) -> torch.Tensor | None:
        """The flattened unit direction the noise stretches most; ``None`` when it is the same in all directions."""
        return None

    def slice_radii(
        self, radius: float, e1: torch.Tensor, e2: torch.Tensor, angles: torch.Tensor, shape: tuple[int, ...]
    ) -> torch.Tensor:
        """Where the certified region of ``radius`` ends along ``cos(t) e1 + sin(t) e2``, for each angle t.

        ``e1``, ``e2`` are orthonormal flattened directions (float64). The region is a ball of this
        method's metric, so along a unit direction u it ends at ``R / distance(u)`` (docs/MATH.md section 6).
        """
        out = []
        for chunk in angles.to(torch.float64).split(_DIRECTION_CHUNK):
            units = torch.cos(chunk)[:, None] * e1 + torch.sin(chunk)[:, None] * e2
            out.append(self.distance(units.reshape(-1, *shape)).to("cpu", torch.float64))
        return _check_radius(radius) / torch.cat(out)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Reject inputs this distribution was not built for."""
        if self.input_shape is not None and tuple(shape) != self.input_shape:
            raise ValueError(f"{self.name} noise was built for inputs of shape {self.input_shape}, got {tuple(shape)}")

    def check_finite_draws(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> None:
        """Refuse parameters whose draws overflow float32: every noisy input would be inf or NaN.

        The probe draws on ``device`` (where the forward runs), so a GPU run makes no host draws at all.
        """
        draws = self.sample(_PROBE_DRAWS, tuple(shape), generator_for(device, 0), device)
        if not torch.isfinite(draws).all():
            raise ValueError(
                f"{self.describe()} overflows float32: its noise draws are not finite numbers; use a smaller sigma"
            )

    def describe(self) -> str:
        return f"{self.name} ({self.metric})"


class IsotropicGaussian(SmoothingNoise):
    """RandSmooth (Cohen et al. 2019): N(0, sigma^2 I), certified in l2."""

    key = "randsmooth"
    name = "RandSmooth"
    color = "#1f77b4"
    dash = "dash"
    metric = "l2"
    metric_short = "l2"
    metric_label = "l2"
    region_name = "l2 ball"

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

    def linf_lower_bound(self, radius: float, dim: int) -> float:
        """R / sqrt(d), since ``||d||_2 <= sqrt(d) ||d||_inf``."""
        return _check_radius(radius) / math.sqrt(_check_dim(dim))

    def describe(self) -> str:
        return f"RandSmooth, sigma={self.sigma:g} (l2)"


class Laplace(SmoothingNoise):
    """LSmooth (Teng et al. 2020): iid Laplace(0, scale), certified in l1."""

    key = "lsmooth"
    name = "LSmooth"
    color = "#2ca02c"
    dash = "dot"
    metric = "l1"
    metric_short = "l1"
    metric_label = "l1"
    region_name = "l1 ball"

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

    def linf_lower_bound(self, radius: float, dim: int) -> float:
        """R / d, since ``||d||_1 <= d ||d||_inf``."""
        return _check_radius(radius) / _check_dim(dim)

    def equal_volume_l2_radius(self, radius: float, dim: int) -> float:
        """vol(l1 ball) = (2R)^d / d!, vol(l2 ball) = pi^(d/2) r^d / Gamma(d/2 + 1), solved for r in logs."""
        radius, dim = _check_radius(radius), _check_dim(dim)
        if radius == 0 or math.isinf(radius):
            return radius
        log_ratio = (math.lgamma(dim / 2 + 1) - math.lgamma(dim + 1)) / dim
        return radius * 2.0 / math.sqrt(math.pi) * math.exp(log_ratio)

    def describe(self) -> str:
        return f"LSmooth, scale={self.scale:g} (sigma={self.sigma:g} matched in variance, l1)"


class AnisotropicGaussian(SmoothingNoise):
    """DSmooth: N(0, sigma^2 St), St the normalized (det or trace) threat covariance, certified in its metric."""

    key = "dsmooth"
    name = "DSmooth"
    color = "#d62728"
    dash = "solid"
    metric = "mahalanobis"
    metric_short = "Mahalanobis"
    metric_label = "Mahalanobis (St)"
    region_name = "Mahalanobis ball of St (ellipsoid)"
    needs_profile = True

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
            raise ValueError(f"{self.name} noise was built for {self.covariance.dim} pixels, got dim={dim}")

    def inscribed_l2_radius(self, radius: float, dim: int) -> float:
        """R sqrt(mu_min): the ellipsoid's shortest semi-axis, along the eigenvector of mu_min."""
        self._check_pixels(dim)
        return _check_radius(radius) * math.sqrt(self.covariance.mu_min)

    def inscribed_l1_radius(self, radius: float, dim: int) -> float:
        """R / sqrt(max_i (St^-1)_ii): exact, the worst vertex r e_i sits on the ellipsoid."""
        self._check_pixels(dim)
        return _check_radius(radius) * self.covariance.l1_radius_factor()

    def linf_lower_bound(self, radius: float, dim: int) -> float:
        """R sqrt(mu_min / d): the inscribed l2 ball R sqrt(mu_min) holds the l_inf ball of that over sqrt(d)."""
        self._check_pixels(dim)
        return _check_radius(radius) * math.sqrt(self.covariance.mu_min / dim)

    def equal_volume_l2_radius(self, radius: float, dim: int) -> float:
        """R det(St)^(1/(2d)): R itself for det normalization, smaller for trace (det St <= 1 by AM-GM)."""
        self._check_pixels(dim)
        return _check_radius(radius) * math.exp(self.covariance.logdet_normalized() / (2 * dim))

    def top_direction(self) -> torch.Tensor | None:
        """The top eigen-direction u1 of St (``None`` at rank 0, where St is isotropic)."""
        return self.covariance.eigenvectors[:, 0] if self.covariance.k else None

    def slice_radii(
        self, radius: float, e1: torch.Tensor, e2: torch.Tensor, angles: torch.Tensor, shape: tuple[int, ...]
    ) -> torch.Tensor:
        """The ellipse ``[a b] M [a b]^T < R^2``, M the 2x2 restriction of St^-1 to the plane.

        M is read off three Mahalanobis distances (of e1, e2 and e1 + e2, by polarisation), so no
        d x d matrix is formed and the cost does not grow with the number of angles.
        """
        q = self.distance(torch.stack([e1, e2, e1 + e2]).reshape(3, *shape)).to("cpu", torch.float64).pow(2)
        m11, m22 = q[0], q[1]
        m12 = 0.5 * (q[2] - m11 - m22)
        t = angles.to(torch.float64)
        c, s = torch.cos(t), torch.sin(t)
        quad = m11 * c * c + 2 * m12 * c * s + m22 * s * s
        return _check_radius(radius) / quad.clamp(min=1e-300).sqrt()

    def describe(self) -> str:
        cov = self.covariance
        return f"DSmooth, sigma={self.sigma:g}, k={cov.k}, {cov.normalization}-normalized (Mahalanobis of St)"


# The method registry: one class per method, in display order. Labels, colours and CLI choices come from here.
METHOD_CLASSES: dict[str, type[SmoothingNoise]] = {
    cls.key: cls for cls in (AnisotropicGaussian, IsotropicGaussian, Laplace)
}
METHODS = tuple(METHOD_CLASSES)


def method_class(method: str) -> type[SmoothingNoise]:
    """The noise class of a method key (``dsmooth``, ``randsmooth``, ``lsmooth``), case-insensitive."""
    try:
        return METHOD_CLASSES[method.lower()]
    except KeyError:
        raise ValueError(f"unknown method '{method}': choose one of {', '.join(METHODS)}") from None


def make_noise(method: str, sigma: float, covariance: LowRankCovariance | None = None) -> SmoothingNoise:
    """Build a method's noise at per-pixel standard deviation ``sigma`` (Laplace matched in variance)."""
    cls = method_class(method)
    if cls is AnisotropicGaussian:
        if covariance is None:
            raise ValueError("DSmooth needs a threat profile (a fitted covariance)")
        return AnisotropicGaussian(sigma, covariance)
    if cls is Laplace:
        return Laplace.from_sigma(sigma)
    return IsotropicGaussian(sigma)
