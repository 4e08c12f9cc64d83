"""The largest l2 and l1 balls inside each certified region, against closed forms (docs/MATH.md section 6).

For every method the inscribed ball must lie inside the region, and the worst point of its boundary
(the worst direction for l2, the worst vertex r e_i for l1) must sit exactly on the region's boundary,
measured with the method's own ``noise.distance``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsmooth_core import AnisotropicGaussian, IsotropicGaussian, Laplace, LowRankCovariance, SmoothingNoise, compare
from tests.fakecerts import certificate
from tests.oracles import anisotropic_perturbations, dense_normalized

SHAPE = (3, 4, 4)
D = math.prod(SHAPE)
R = 0.7
METHODS = ("randsmooth", "lsmooth", "dsmooth")


@pytest.fixture(scope="module", params=["det", "trace"])
def covariance(request) -> LowRankCovariance:
    return LowRankCovariance.fit(anisotropic_perturbations(200, SHAPE, seed=2), k=4, normalization=request.param)


def make(method: str, covariance: LowRankCovariance) -> SmoothingNoise:
    if method == "randsmooth":
        return IsotropicGaussian(0.25)
    if method == "lsmooth":
        return Laplace.from_sigma(0.25)
    return AnisotropicGaussian(0.25, covariance)


def worst_l2_direction(method: str, covariance: LowRankCovariance) -> torch.Tensor:
    """A unit l2 direction in which the region is thinnest."""
    if method == "randsmooth":  # a ball: every direction is as thin as any other
        v = torch.randn(D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    elif method == "lsmooth":  # the l1 ball is thinnest towards the centres of its faces
        v = torch.ones(D, dtype=torch.float64)
    else:  # the eigenvector of mu_min: the residual direction, orthogonal to all fitted eigenvectors
        v = torch.randn(D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        u = covariance.eigenvectors
        v = v - u @ (u.T @ v)
    return (v / v.norm()).reshape(SHAPE)


def random_unit_directions(n: int, seed: int) -> torch.Tensor:
    v = torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (v / v.norm(dim=1, keepdim=True)).reshape(n, *SHAPE)


@pytest.mark.parametrize("method", METHODS)
def test_inscribed_l2_ball_touches_the_boundary_in_the_worst_direction(method, covariance):
    noise = make(method, covariance)
    r = noise.inscribed_l2_radius(R, D)
    worst = worst_l2_direction(method, covariance)
    assert float(noise.distance(r * worst)) == pytest.approx(R, rel=1e-9)
    assert float(noise.distance(1.001 * r * worst)) > R  # no larger l2 ball fits
    # every other direction at that l2 radius stays inside
    assert bool((noise.distance(r * random_unit_directions(200, seed=1)) <= R * (1 + 1e-9)).all())


@pytest.mark.parametrize("method", METHODS)
def test_inscribed_l1_ball_vertices_lie_inside_with_the_worst_on_the_boundary(method, covariance):
    noise = make(method, covariance)
    r = noise.inscribed_l1_radius(R, D)
    vertices = r * torch.cat([torch.eye(D), -torch.eye(D)]).to(torch.float64).reshape(2 * D, *SHAPE)
    dists = noise.distance(vertices)
    assert bool((dists <= R * (1 + 1e-9)).all())
    assert float(dists.max()) == pytest.approx(R, rel=1e-9)


def test_closed_forms_per_method(covariance):
    assert IsotropicGaussian(0.25).inscribed_l2_radius(R, D) == R
    assert IsotropicGaussian(0.25).inscribed_l1_radius(R, D) == R
    assert Laplace(0.1).inscribed_l2_radius(R, D) == pytest.approx(R / math.sqrt(D))
    assert Laplace(0.1).inscribed_l1_radius(R, D) == R
    ds = AnisotropicGaussian(0.25, covariance)
    st = dense_normalized(covariance)
    assert ds.inscribed_l2_radius(R, D) == pytest.approx(R * math.sqrt(np.linalg.eigvalsh(st).min()), rel=1e-9)
    st_inv_diag = np.linalg.inv(st).diagonal()
    assert ds.inscribed_l1_radius(R, D) == pytest.approx(R / math.sqrt(st_inv_diag.max()), rel=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_radii_scale_with_the_certificate_and_match_the_records(method, covariance):
    noise = make(method, covariance)
    assert noise.inscribed_l2_radius(0.0, D) == 0.0 and noise.inscribed_l1_radius(0.0, D) == 0.0
    assert noise.inscribed_l2_radius(2 * R, D) == pytest.approx(2 * noise.inscribed_l2_radius(R, D))
    assert noise.inscribed_l1_radius(2 * R, D) == pytest.approx(2 * noise.inscribed_l1_radius(R, D))
    result = compare(certificate(noise, 1, R), noise, None, dim=D)
    assert (result.l2_inscribed, result.l1_inscribed) == (
        noise.inscribed_l2_radius(R, D),
        noise.inscribed_l1_radius(R, D),
    )
    with pytest.raises(ValueError, match="radius"):
        noise.inscribed_l2_radius(-0.1, D)
    with pytest.raises(ValueError, match="dimension"):
        noise.inscribed_l1_radius(R, 0)


def test_dsmooth_rejects_a_dimension_it_was_not_built_for(covariance):
    with pytest.raises(ValueError, match="pixels"):
        AnisotropicGaussian(0.25, covariance).inscribed_l2_radius(R, D + 1)


def test_an_infinite_certificate_stays_infinite():
    assert Laplace(0.1).inscribed_l2_radius(math.inf, D) == math.inf
    assert Laplace(0.1).inscribed_l1_radius(math.inf, D) == math.inf
