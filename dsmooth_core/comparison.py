"""One certificate set against an attack perturbation and restated in shared metrics (docs/MATH.md section 6).

Each method certifies a ball in its own metric (l2, l1, Mahalanobis of St), so neither their radii
nor "is the attack inside?" can be read off one formula. The noise that produced the certificate
knows its metric and its region; this module asks it, once, for the experiment runner and the app.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dsmooth_core.certify import Certificate, check_same_noise
from dsmooth_core.noise import SmoothingNoise


@dataclass(frozen=True)
class Comparison:
    """What one certificate guarantees, each radius in the named metric, and where the attack lies."""

    radius: float  # the certified radius, in ``metric``; 0 when the certificate abstained
    metric: str
    l2_inscribed: float  # largest l2 ball inside the region: the l2 radius guaranteed in every direction
    l1_inscribed: float  # largest l1 ball inside the region
    linf_lower_bound: float  # an l_inf ball of this radius lies inside the region
    equal_volume_l2: float  # radius of the l2 ball of the region's volume: a size, not a guarantee
    distance: float | None  # the perturbation's size in ``metric``; None without a perturbation
    inside: bool | None  # the perturbation lies strictly inside the region
    certified: bool | None  # the true label is certified and the perturbation inside; None if either is unknown


def compare(
    certificate: Certificate,
    noise: SmoothingNoise,
    delta: torch.Tensor | None,
    *,
    label: int | None = None,
    dim: int | None = None,
) -> Comparison:
    """Set ``certificate`` (made with ``noise``) against an image's attack perturbation ``delta`` (C,H,W).

    The region is the open ball ``{d : noise.distance(d) < R}``; an abstention certifies nothing.
    ``dim`` (the number of pixels) is needed only without ``delta``.
    """
    check_same_noise(certificate, noise, "compared")
    if delta is not None:
        dim = math.prod(delta.shape)
    if dim is None:
        raise ValueError("give the perturbation or the number of pixels dim")
    radius = 0.0 if certificate.abstained else max(float(certificate.radius), 0.0)
    distance = inside = certified = None
    if delta is not None:
        distance = float(noise.distance(delta.detach().to("cpu", torch.float64)))
        inside = radius > 0 and distance < radius
        if label is not None:
            certified = inside and certificate.prediction == label
    return Comparison(
        radius=radius,
        metric=certificate.metric,
        l2_inscribed=noise.inscribed_l2_radius(radius, dim),
        l1_inscribed=noise.inscribed_l1_radius(radius, dim),
        linf_lower_bound=noise.linf_lower_bound(radius, dim),
        equal_volume_l2=noise.equal_volume_l2_radius(radius, dim),
        distance=distance,
        inside=inside,
        certified=certified,
    )
