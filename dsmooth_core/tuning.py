"""Choose DSmooth's covariance knobs (normalization, rank k, shrinkage) on held-out calibration images.

The paper fixes det normalization and k = 100; ``docs/REPRODUCTION.md`` shows that this setting
abstains on most images. Which setting works is an empirical question, so it is answered on images
that are neither test images nor the images whose perturbations were fitted: the calibration set is
split into a fitting part and a tuning part, every setting of a small grid certifies the tuning part,
and the setting with the highest certified accuracy at r = 0 wins. Settings whose St is nearly
isotropic (axis ratio below ``min_axis_ratio``) are not eligible: they would be RandSmooth by another
name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import product
from typing import Any

import torch
from torch import nn

from dsmooth_core.certify import certification_checks, certify
from dsmooth_core.contract import model_contract
from dsmooth_core.covariance import NORMALIZATIONS, LowRankCovariance
from dsmooth_core.device import generator_for
from dsmooth_core.noise import AnisotropicGaussian
from dsmooth_core.progress import ProgressCallback, report
from dsmooth_core.seeds import derive_seed
from dsmooth_core.settings import ProfileShape


@dataclass(frozen=True)
class TuningGrid:
    """The settings tried; the first eligible one wins ties, so list the paper's setting first."""

    normalizations: tuple[str, ...] = ("det", "trace")
    ranks: tuple[int, ...] = (100, 30, 10)
    shrinkages: tuple[float, ...] = (0.0, 0.5, 0.9)
    min_axis_ratio: float = 2.0

    def __post_init__(self) -> None:
        if not (self.normalizations and self.ranks and self.shrinkages):
            raise ValueError("the tuning grid needs at least one normalization, rank and shrinkage")
        for name in self.normalizations:
            if name not in NORMALIZATIONS:
                raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {name!r}")
        if min(self.ranks) < 1:
            raise ValueError(f"every rank k must be at least 1, got {self.ranks}")
        if not all(0.0 <= g <= 1.0 for g in self.shrinkages):
            raise ValueError(f"every shrinkage must lie in [0, 1], got {self.shrinkages}")
        if not self.min_axis_ratio >= 1.0:
            raise ValueError(f"min_axis_ratio must be at least 1, got {self.min_axis_ratio}")


@dataclass(frozen=True)
class TuningRow:
    """One setting's score on the tuning images."""

    normalization: str
    k: int
    shrinkage: float
    axis_ratio: float  # sqrt(mu_max / mu_min) of St: 1 is isotropic
    certified: int  # tuning images certified with the correct class (r = 0)
    abstained: int
    images: int
    eligible: bool

    @property
    def shape(self) -> ProfileShape:
        """This row's setting of the knobs."""
        return ProfileShape(self.normalization, self.k, self.shrinkage)

    @property
    def accuracy(self) -> float:
        return self.certified / self.images


@dataclass(frozen=True)
class TuningResult:
    rows: tuple[TuningRow, ...]
    choice: TuningRow
    sigma: float
    n0: int
    n: int
    alpha: float
    seed: int

    def apply(self, fitted: LowRankCovariance) -> LowRankCovariance:
        """The fitted covariance with the chosen knobs."""
        return self.choice.shape.apply(fitted)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a profile's metadata and for reports."""
        return {
            "sigma": self.sigma,
            "n0": self.n0,
            "n": self.n,
            "alpha": self.alpha,
            "seed": self.seed,
            "choice": asdict(self.choice),
            "table": [asdict(row) for row in self.rows],
        }


def axis_ratio(covariance: LowRankCovariance) -> float:
    return math.sqrt(covariance.mu_max / covariance.mu_min)


def tune_covariance(
    model: nn.Module,
    fitted: LowRankCovariance,
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    *,
    sigma: float,
    grid: TuningGrid = TuningGrid(),  # frozen, so one shared default is safe
    n0: int = 100,
    n: int = 500,
    alpha: float = 0.001,
    batch_size: int = 500,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> TuningResult:
    """Certify the tuning ``images`` under every setting of ``grid`` and pick the most accurate eligible one.

    ``fitted`` must come from perturbations of other images than ``images``. Every setting sees the
    same generator seed per image, so settings are compared on common random numbers.
    """
    labels = [int(v) for v in labels]
    if len(labels) != len(images) or not len(images):
        raise ValueError(f"tuning needs one label per image and at least one image, got {len(images)} / {len(labels)}")
    ranks = sorted({min(k, fitted.k) for k in grid.ranks}, reverse=True)  # ranks above the fit's are one setting
    settings = list(product(grid.normalizations, ranks, grid.shrinkages))
    total, done = len(settings) * len(images), 0
    rows = []
    with model_contract(model, tuple(images.shape[1:])):  # checked once, not once per certificate
        for normalization, k, shrinkage in settings:
            covariance = ProfileShape(normalization, k, shrinkage).apply(fitted)
            noise = AnisotropicGaussian(sigma, covariance)
            certified = abstained = 0
            with certification_checks(model, noise, tuple(images.shape[1:])):  # once per setting, not per image
                for index, (x, label) in enumerate(zip(images, labels, strict=True)):
                    generator = generator_for(model, derive_seed(seed, index, "tuning"))
                    cert = certify(model, x, noise, n0, n, alpha, batch_size, generator)
                    certified += cert.prediction == label
                    abstained += cert.abstained
                    done += 1
                    report(progress, done, total)
            ratio = axis_ratio(covariance)
            rows.append(
                TuningRow(
                    normalization=normalization,
                    k=covariance.k,
                    shrinkage=shrinkage,
                    axis_ratio=ratio,
                    certified=certified,
                    abstained=abstained,
                    images=len(images),
                    eligible=ratio >= grid.min_axis_ratio,
                )
            )
    eligible = [row for row in rows if row.eligible]
    if not eligible:
        raise ValueError(
            f"no setting of the grid is anisotropic enough (axis ratio >= {grid.min_axis_ratio}); "
            "lower the shrinkages or min_axis_ratio"
        )
    choice = max(eligible, key=lambda row: row.certified)  # max keeps the first of ties
    return TuningResult(rows=tuple(rows), choice=choice, sigma=sigma, n0=n0, n=n, alpha=alpha, seed=seed)


def split_calibration(indices: Sequence[int], tuning_share: float, seed: int) -> tuple[list[int], list[int]]:
    """Split calibration indices into (fitting, tuning) parts, disjoint, by a seeded permutation."""
    if not 0 < tuning_share < 1:
        raise ValueError(f"the tuning share must lie strictly between 0 and 1, got {tuning_share}")
    indices = [int(i) for i in indices]
    if len(set(indices)) != len(indices):
        raise ValueError("calibration indices must be distinct")
    count = round(len(indices) * tuning_share)
    if count < 1 or len(indices) - count < 2:
        raise ValueError(f"{len(indices)} calibration images are too few to split with share {tuning_share}")
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed)).tolist()
    tuning = sorted(indices[i] for i in order[:count])
    fitting = sorted(indices[i] for i in order[count:])
    return fitting, tuning
