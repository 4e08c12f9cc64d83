"""An attack perturbation measured in every metric a certificate can be in (docs/MATH.md section 6).

The records keep all four sizes, so a reader can set one perturbation against every method's region;
whether it lies inside a given certificate's region is :func:`dsmooth_core.comparison.compare`'s call.
"""

from __future__ import annotations

import torch

from dsmooth_core.attacks.norms import perturbation_norms
from dsmooth_core.covariance import LowRankCovariance


def perturbation_distances(delta: torch.Tensor, covariance: LowRankCovariance) -> dict[str, float]:
    """Sizes of one perturbation (C,H,W) in l2, l1, l_inf and the Mahalanobis metric of ``covariance``'s St.

    Keys are the metric names the noises use (``noise.metric``), so ``distances[noise.metric]`` is the
    perturbation's size in the metric of that method's certificate.
    """
    norms = perturbation_norms(delta.detach().to("cpu", torch.float64).reshape(1, -1))
    return {
        **{metric: float(norms[metric][0]) for metric in ("l2", "l1", "linf")},
        "mahalanobis": float(covariance.mahalanobis(delta.detach().reshape(covariance.shape))),
    }
