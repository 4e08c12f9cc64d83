"""DSmooth Lab's library: certified robustness by randomized smoothing.

Three smoothing distributions (DSmooth, RandSmooth, LSmooth), the low-rank threat covariance that
shapes DSmooth's noise, and Cohen's Monte Carlo ``predict``/``certify``. Inputs are tensors in
[0, 1] pixel space; every random draw comes from an explicit ``torch.Generator``.
"""

from dsmooth_core.certify import ABSTAIN, Certificate, at_level, certify, predict, radius_ceiling
from dsmooth_core.comparison import Comparison, compare
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.device import pick_device
from dsmooth_core.noise import AnisotropicGaussian, IsotropicGaussian, Laplace, SmoothingNoise
from dsmooth_core.progress import Cancelled

__all__ = [
    "ABSTAIN",
    "AnisotropicGaussian",
    "Cancelled",
    "Certificate",
    "Comparison",
    "IsotropicGaussian",
    "Laplace",
    "LowRankCovariance",
    "SmoothingNoise",
    "at_level",
    "certify",
    "compare",
    "pick_device",
    "predict",
    "radius_ceiling",
]
