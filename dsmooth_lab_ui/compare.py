"""The honest comparison of MATH.md section 6: what each certificate guarantees in common metrics.

Each method certifies a different region (an l2 ball, an l1 ball, a Mahalanobis ellipsoid), so the
Certify page sets them side by side in shared terms: the l2 radius guaranteed in every direction,
the l1 radius, a lower bound on the l_inf radius, the radius of the l2 ball of equal volume (a proxy
that compares sizes, not a guarantee), and whether the actual attack perturbation lies inside.
The l2 and l1 radii, and DSmooth's l_inf bound, come from the noise objects (``dsmooth_core``); only
the l_inf bounds of the isotropic methods and the l1-ball volume are written here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dsmooth_core import AnisotropicGaussian, IsotropicGaussian, Laplace, LowRankCovariance, SmoothingNoise

REGION = {
    "RandSmooth": "l2 ball",
    "LSmooth": "l1 ball",
    "DSmooth": "Mahalanobis ball of St (ellipsoid)",
}
METRIC_LABEL = {"l2": "l2", "l1": "l1", "mahalanobis": "Mahalanobis (St)"}


@dataclass(frozen=True)
class Guarantee:
    """Radii one certificate of radius ``radius`` (in ``metric``) guarantees, each in the named metric."""

    method: str
    metric: str
    radius: float
    l2_every_direction: float
    l1: float
    linf_lower_bound: float
    equal_volume_l2: float


def l1_ball_equal_volume_l2_radius(radius: float, dim: int) -> float:
    """Radius of the l2 ball with the volume of the l1 ball of ``radius`` in ``dim`` dimensions.

    vol(l1 ball) = (2R)^d / d!, vol(l2 ball) = pi^(d/2) r^d / Gamma(d/2 + 1), solved in logs.
    """
    if radius <= 0:
        return 0.0
    log_ratio = (math.lgamma(dim / 2 + 1) - math.lgamma(dim + 1)) / dim
    return radius * 2.0 / math.sqrt(math.pi) * math.exp(log_ratio)


def guarantee(noise: SmoothingNoise, radius: float, dim: int) -> Guarantee:
    """What a certificate of ``radius`` from ``noise`` guarantees (0 everywhere when it abstained)."""
    r = max(float(radius), 0.0)
    l2, l1 = noise.inscribed_l2_radius(r, dim), noise.inscribed_l1_radius(r, dim)
    if isinstance(noise, AnisotropicGaussian):
        # det St = 1: the ellipsoid has the volume of the l2 ball of radius R, but only R sqrt(mu_min)
        # is guaranteed in every direction.
        linf = noise.linf_radius_lower_bound(r)
        volume = r
    elif isinstance(noise, Laplace):
        # ||d||_1 <= d ||d||_inf
        linf = r / dim
        volume = l1_ball_equal_volume_l2_radius(r, dim) if math.isfinite(r) else math.inf
    elif isinstance(noise, IsotropicGaussian):
        # ||d||_2 <= sqrt(d) ||d||_inf
        linf = r / math.sqrt(dim)
        volume = r
    else:
        raise TypeError(f"no comparison known for {type(noise).__name__}")
    return Guarantee(noise.method, noise.metric, r, l2, l1, linf, volume)


def inside(noise: SmoothingNoise, radius: float, delta: torch.Tensor) -> tuple[float, bool]:
    """Size of ``delta`` in the method's own metric, and whether it lies strictly inside the region."""
    size = float(noise.distance(delta.to(torch.float32)))
    return size, bool(radius > 0 and size < radius)


def shape_summary(cov: LowRankCovariance) -> dict[str, float]:
    """How anisotropic the certified ellipsoid is, for the Threat profile page.

    St has determinant 1, so the ellipsoid of radius R has the volume of the l2 ball of radius R.
    What shape costs is in the directions it is thin: the l2 ball it contains has radius
    R sqrt(mu_min), whose volume relative to the ellipsoid's is (d/2) log(mu_min) in natural logs.
    """
    mu_min, mu_max = cov.mu_min, cov.mu_max
    return {
        "mu_min": mu_min,
        "mu_max": mu_max,
        "axis_ratio": math.sqrt(mu_max / mu_min),
        "inscribed_log_volume_ratio": cov.dim / 2 * math.log(mu_min),
        "inscribed_radius_factor": math.sqrt(mu_min),
        "logdet_S": cov.logdet(),
        "geometric_mean": cov.geometric_mean,
        "explained_variance": cov.explained_variance,
        "residual_variance": cov.residual_variance,
    }


def cumulative_explained(cov: LowRankCovariance) -> list[float]:
    """Share of trace(S) carried by the top-i fitted directions, i = 1..k."""
    total = 0.0
    out = []
    for value in cov.base_eigenvalues.tolist():
        total += value
        out.append(total / cov.trace)
    return out
