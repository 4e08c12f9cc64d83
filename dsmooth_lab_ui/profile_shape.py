"""How anisotropic a threat profile's certified ellipsoid is, for the Threat profile page (docs/MATH.md section 6)."""

from __future__ import annotations

import math

from dsmooth_core import LowRankCovariance
from dsmooth_core.tuning import axis_ratio


def shape_summary(cov: LowRankCovariance) -> dict[str, float]:
    """How anisotropic the certified ellipsoid is, for the Threat profile page.

    The ellipsoid of radius R has the volume of the l2 ball of radius R det(St)^(1/(2d)) (R itself
    for det normalization). What shape costs is in the directions it is thin: the l2 ball it contains
    has radius R sqrt(mu_min), whose log-volume relative to the ellipsoid's is
    (d/2) log(mu_min) - (1/2) log det St.
    """
    logdet_st = cov.logdet_normalized()
    return {
        "mu_min": cov.mu_min,
        "mu_max": cov.mu_max,
        "axis_ratio": axis_ratio(cov),
        "inscribed_log_volume_ratio": cov.dim / 2 * math.log(cov.mu_min) - logdet_st / 2,
        "logdet_St": logdet_st,
        "equal_volume_factor": math.exp(logdet_st / (2 * cov.dim)),
        "inscribed_radius_factor": math.sqrt(cov.mu_min),
        "longest_axis_factor": math.sqrt(cov.mu_max),
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
