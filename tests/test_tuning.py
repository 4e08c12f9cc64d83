"""Tuning DSmooth's knobs on held-out images: a toy problem whose best setting is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from dsmooth_core import LowRankCovariance
from dsmooth_core.settings import ProfileShape
from dsmooth_core.tuning import TuningGrid, axis_ratio, split_calibration, tune_covariance
from tests.oracles import LinearClassifier, anisotropic_perturbations, dense_normalized

SHAPE = (3, 4, 4)
SIGMA = 0.5


@pytest.fixture(scope="module")
def fitted() -> LowRankCovariance:
    return LowRankCovariance.fit(anisotropic_perturbations(200, SHAPE, seed=21), k=4)


def _boundary_normal(fitted: LowRankCovariance) -> torch.Tensor:
    """A unit w outside the span of the fitted threat directions: noise along w is the residual's."""
    v = torch.randn(fitted.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    u = fitted.eigenvectors
    v = v - u @ (u.T @ v)
    return v / v.norm()


def test_tuning_picks_the_setting_with_least_noise_across_the_boundary(fitted):
    grid = TuningGrid(normalizations=("det", "trace"), ranks=(4,), shrinkages=(0.0, 0.5, 0.9), min_axis_ratio=2.0)
    w = _boundary_normal(fitted)
    wv = w.numpy()
    # For a linear f the smoothed probability is Phi(margin / (sigma sqrt(w^T St w))): the best eligible
    # setting is the one with the smallest w^T St w, computed here from a dense St.
    spread = {}
    for normalization in grid.normalizations:
        for shrinkage in grid.shrinkages:
            cov = ProfileShape(normalization, 4, shrinkage).apply(fitted)
            if axis_ratio(cov) >= grid.min_axis_ratio:
                spread[(normalization, shrinkage)] = float(wv @ dense_normalized(cov) @ wv)
    best = min(spread, key=spread.get)
    ordered = sorted(spread.values())
    assert len(ordered) >= 2 and ordered[1] > 1.5 * ordered[0]  # the design separates the settings
    x0 = torch.full(SHAPE, 0.5, dtype=torch.float64)
    margins = SIGMA * np.sqrt(ordered[0]) * np.linspace(0.5, 4.0, 16)
    images = torch.stack([x0 + float(m) * w.reshape(SHAPE) for m in margins]).float()
    model = LinearClassifier(w.reshape(SHAPE), float((w * x0.flatten()).sum()))
    result = tune_covariance(
        model, fitted, images, [1] * len(images), sigma=SIGMA, grid=grid, n0=50, n=400, alpha=0.01, seed=3
    )
    assert (result.choice.normalization, result.choice.shrinkage) == best
    assert result.choice.eligible and result.choice.axis_ratio >= 2.0
    assert len(result.rows) == 6
    expected = {key: sum(norm.cdf(m / (SIGMA * np.sqrt(q))) > 0.9 for m in margins) for key, q in spread.items()}
    assert result.choice.certified >= expected[best] - 2
    table = result.to_dict()["table"]
    assert {(row["normalization"], row["shrinkage"]) for row in table} == {
        (a, b) for a in grid.normalizations for b in grid.shrinkages
    }
    tuned = result.apply(fitted)
    assert (tuned.normalization, tuned.k, tuned.shrinkage) == (best[0], 4, best[1])


def test_nearly_isotropic_settings_are_never_chosen(fitted):
    grid = TuningGrid(normalizations=("trace",), ranks=(4,), shrinkages=(1.0,), min_axis_ratio=2.0)
    images = torch.full((1, *SHAPE), 0.5)
    model = LinearClassifier(torch.ones(SHAPE), 0.0)
    with pytest.raises(ValueError, match="anisotropic enough"):
        tune_covariance(model, fitted, images, [1], sigma=SIGMA, grid=grid, n0=10, n=20, seed=0)


def test_calibration_split_is_disjoint_complete_and_seeded():
    indices = list(range(100, 160))
    fitting, tuning = split_calibration(indices, 0.25, seed=4)
    assert len(tuning) == 15 and len(fitting) == 45
    assert not set(fitting) & set(tuning) and sorted(fitting + tuning) == indices
    assert split_calibration(indices, 0.25, seed=4) == (fitting, tuning)
    assert split_calibration(indices, 0.25, seed=5) != (fitting, tuning)


@pytest.mark.parametrize(
    ("indices", "share", "message"),
    [([1, 2, 3], 0.0, "strictly between"), ([1, 1, 2, 3], 0.5, "distinct"), ([1, 2], 0.5, "too few")],
)
def test_bad_splits_are_refused(indices, share, message):
    with pytest.raises(ValueError, match=message):
        split_calibration(indices, share, seed=0)


def test_bad_grids_are_refused():
    with pytest.raises(ValueError, match="normalization"):
        TuningGrid(normalizations=("volume",))
    with pytest.raises(ValueError, match="shrinkage"):
        TuningGrid(shrinkages=(1.5,))
    with pytest.raises(ValueError, match="rank"):
        TuningGrid(ranks=(0,))


def test_ranks_above_the_fit_are_one_setting_not_a_repeat(fitted):
    grid = TuningGrid(normalizations=("det",), ranks=(8, 6, 4, 2), shrinkages=(0.0,), min_axis_ratio=1.0)
    images = torch.full((2, *SHAPE), 0.5)
    model = LinearClassifier(torch.ones(SHAPE), 0.0)
    result = tune_covariance(model, fitted, images, [1, 1], sigma=SIGMA, grid=grid, n0=10, n=20, seed=0)
    assert [row.k for row in result.rows] == [4, 2]  # fitted.k = 4: ranks 8 and 6 clamp to it
