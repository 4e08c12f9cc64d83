"""Where an attack perturbation lies relative to each certified region (MATH.md section 6).

Each method certifies a ball in its own metric, so comparing them needs the same perturbation
measured in every metric, and every certificate restated as the largest l2 and l1 balls it contains.
"""

from __future__ import annotations

import torch

from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.noise import SmoothingNoise


def perturbation_distances(delta: torch.Tensor, covariance: LowRankCovariance) -> dict[str, float]:
    """Sizes of one perturbation (C,H,W) in l2, l1, l_inf and the Mahalanobis metric of ``covariance``'s St.

    Keys are the metric names the noises use (``noise.metric``), so ``distances[noise.metric]`` is the
    perturbation's size in the metric of that method's certificate.
    """
    flat = delta.detach().to("cpu", torch.float64).flatten()
    return {
        "l2": float(torch.linalg.vector_norm(flat, 2)),
        "l1": float(flat.abs().sum()),
        "linf": float(flat.abs().max()) if flat.numel() else 0.0,
        "mahalanobis": float(covariance.mahalanobis(delta.detach().reshape(covariance.shape))),
    }


def is_covered(prediction: int, label: int, distance: float, radius: float) -> bool:
    """The certificate names the true label and the perturbation lies strictly inside its ball.

    ``distance`` must be measured in the metric of the certificate (``||d||_2``, ``||d||_1`` or
    ``MAHL_St(d)``); the region is the open ball ``{d : distance(d) < radius}``.
    """
    return prediction == label and distance < radius


def inscribed_radii(noise: SmoothingNoise, radius: float, dim: int) -> dict[str, float]:
    """Radii of the largest l2 and l1 balls inside the certified region of radius ``radius`` in ``dim`` pixels.

    The formulas belong to each noise (``inscribed_l2_radius``/``inscribed_l1_radius``); an abstention
    (``radius <= 0``) certifies nothing.
    """
    if radius <= 0:
        return {"l2_inscribed": 0.0, "l1_radius": 0.0}
    return {
        "l2_inscribed": noise.inscribed_l2_radius(radius, dim),
        "l1_radius": noise.inscribed_l1_radius(radius, dim),
    }
