"""The audit's projections against dense solutions found by a generic constrained solver."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from dsmooth_core import LowRankCovariance
from dsmooth_core.projections import Whitening, project_l1, project_l2
from tests.oracles import anisotropic_perturbations, dense_normalized

SHAPE = (1, 2, 3)  # d = 6: small enough for the dense solver to be exact


def _solve(metric: np.ndarray, target: np.ndarray, ball: np.ndarray, radius: float) -> np.ndarray:
    """A dense reference: argmin (p - t)^T M (p - t) s.t. p^T B p <= r^2, by SLSQP with exact gradients."""
    result = minimize(
        lambda p: (p - target) @ metric @ (p - target),
        np.zeros_like(target),
        jac=lambda p: 2 * metric @ (p - target),
        method="SLSQP",
        constraints=[{"type": "ineq", "fun": lambda p: radius**2 - p @ ball @ p, "jac": lambda p: -2 * ball @ p}],
        options={"ftol": 1e-13, "maxiter": 1000},
    )
    # Status 8 is SLSQP stopping at the limit of float precision, which the comparisons below judge.
    assert result.status in (0, 8), result.message
    return result.x


def _vectors(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(SHAPE, generator=g, dtype=torch.float64) * scale for scale in (0.1, 1.0, 3.0)]


@pytest.mark.parametrize("seed", range(3))
def test_l2_projection_matches_dense_solver(seed):
    for v in _vectors(seed):
        ours = project_l2(v, 1.0).reshape(-1).numpy()
        target = v.reshape(-1).numpy()
        dense = _solve(np.eye(6), target, np.eye(6), 1.0)
        assert np.allclose(ours, dense, atol=1e-5)
        assert np.linalg.norm(ours) <= 1.0 + 1e-12


@pytest.mark.parametrize("seed", range(3))
def test_l1_projection_matches_dense_solver(seed):
    for v in _vectors(seed):
        ours = project_l1(v, 1.0).reshape(-1).numpy()
        target = v.reshape(-1).numpy()
        # The l1 ball as a smooth problem: x = p - q with p, q >= 0 and sum(p + q) <= 1.
        bounds = [(0, None)] * 12
        result = minimize(
            lambda pq, t=target: ((pq[:6] - pq[6:] - t) ** 2).sum(),
            np.zeros(12),
            method="SLSQP",
            bounds=bounds,
            constraints=[{"type": "ineq", "fun": lambda pq: 1.0 - pq.sum()}],
            options={"ftol": 1e-11, "maxiter": 1000},
        )
        assert result.success, result.message
        dense = result.x[:6] - result.x[6:]
        assert np.allclose(ours, dense, atol=1e-5)
        assert np.abs(ours).sum() <= 1.0 + 1e-12


def test_l1_projection_of_a_point_inside_or_at_zero_radius():
    v = torch.tensor([0.1, -0.2, 0.3])
    assert torch.equal(project_l1(v, 1.0), v)
    assert torch.equal(project_l1(v, 0.0), torch.zeros(3))
    # Ties: all magnitudes equal, the threshold is shared.
    assert torch.allclose(project_l1(torch.tensor([1.0, -1.0, 1.0]), 1.5), torch.tensor([0.5, -0.5, 0.5]))


def test_projections_reject_bad_radii():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            project_l2(torch.ones(3), bad)
        with pytest.raises(ValueError):
            project_l1(torch.ones(3), bad)


@pytest.fixture(params=[(0.0, "det"), (0.5, "det"), (0.0, "trace")])
def covariance(request) -> LowRankCovariance:
    shrinkage, normalization = request.param
    data = anisotropic_perturbations(40, SHAPE, seed=1)
    return LowRankCovariance.fit(data, k=3, shrinkage=shrinkage, normalization=normalization)


def test_whitening_matches_dense_square_roots(covariance):
    st = dense_normalized(covariance)
    evals, vecs = np.linalg.eigh(st)
    root = vecs @ np.diag(np.sqrt(evals)) @ vecs.T
    inverse_root = vecs @ np.diag(1 / np.sqrt(evals)) @ vecs.T
    w = Whitening(covariance)
    for v in _vectors(2):
        flat = v.reshape(-1).numpy()
        assert np.allclose(w.color(v).reshape(-1).numpy(), root @ flat, atol=1e-10)
        assert np.allclose(w.whiten(v).reshape(-1).numpy(), inverse_root @ flat, atol=1e-10)
        # The whitened l2 norm is the Mahalanobis distance the certificate is stated in.
        assert float(torch.linalg.vector_norm(w.whiten(v))) == pytest.approx(float(covariance.mahalanobis(v)))


def test_ellipsoid_projection_matches_dense_solver_in_the_metric_of_st(covariance):
    inverse = np.linalg.inv(dense_normalized(covariance))
    w = Whitening(covariance)
    radius = 0.7
    for v in _vectors(3):
        ours = w.project(v, radius).reshape(-1).numpy()
        target = v.reshape(-1).numpy()
        dense = _solve(inverse, target, inverse, radius)
        assert np.allclose(ours, dense, atol=1e-4)
        assert float(covariance.mahalanobis(torch.from_numpy(ours).reshape(SHAPE))) <= radius * (1 + 1e-9)


def test_ellipsoid_projection_is_not_the_euclidean_one(covariance):
    """Documented choice: nearest in the metric of St, which differs from the Euclidean nearest point."""
    w = Whitening(covariance)
    v = _vectors(4)[2]
    ours = w.project(v, 0.7).reshape(-1).numpy()
    target = v.reshape(-1).numpy()
    inverse = np.linalg.inv(dense_normalized(covariance))
    euclidean = _solve(np.eye(6), target, inverse, 0.7)
    assert np.linalg.norm(euclidean - target) <= np.linalg.norm(ours - target) + 1e-9
    assert not np.allclose(ours, euclidean, atol=1e-3)
