"""Each noise's certified region as the Certify page and the runner read it (docs/MATH.md section 6).

Slices of the region by a plane (the generic ``R / distance(u)`` and DSmooth's 2x2 closed form
against dense oracles), its l_inf and equal-volume radii, and ``compare``: the one place that says
whether an attack perturbation lies inside a certificate's region.
"""

from __future__ import annotations

import math

import pytest
import torch

from dsmooth_core import ABSTAIN, AnisotropicGaussian, IsotropicGaussian, Laplace, LowRankCovariance, compare
from dsmooth_core.noise import METHOD_CLASSES, METHODS, SmoothingNoise, make_noise, method_class
from tests.fakecerts import certificate
from tests.oracles import diagonal_covariance


def dense_st_inverse(cov: LowRankCovariance) -> torch.Tensor:
    """St^-1 formed explicitly (test oracle; fine for tiny d)."""
    u, lam, rho2 = cov.eigenvectors, cov.eigenvalues, cov.residual_variance
    s = u @ torch.diag(lam - rho2) @ u.T + rho2 * torch.eye(cov.dim, dtype=torch.float64)
    return torch.linalg.inv(s / cov.geometric_mean)


def axis(d: int, i: int) -> torch.Tensor:
    v = torch.zeros(d, dtype=torch.float64)
    v[i] = 1.0
    return v


def orthonormal_pair(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, 2, generator=g, dtype=torch.float64))
    return q[:, 0], q[:, 1]


TURN = torch.linspace(0, 2 * math.pi, 361, dtype=torch.float64)


# ---------------------------------------------------------------- the registry
def test_registry_feeds_keys_names_colours_and_metrics() -> None:
    assert METHODS == ("dsmooth", "randsmooth", "lsmooth")
    assert [cls.name for cls in METHOD_CLASSES.values()] == ["DSmooth", "RandSmooth", "LSmooth"]
    assert len({cls.color for cls in METHOD_CLASSES.values()}) == 3
    assert method_class("DSmooth") is AnisotropicGaussian and method_class("lsmooth") is Laplace
    with pytest.raises(ValueError, match="unknown method"):
        method_class("gauss")
    cov = diagonal_covariance()
    for key in METHODS:
        noise = make_noise(key, 0.25, cov)
        assert noise.key == key and type(noise) is METHOD_CLASSES[key]
    assert make_noise("lsmooth", 0.25).sigma == pytest.approx(0.25)  # matched in variance
    identities = {make_noise(k, s, cov).identity() for k in METHODS for s in (0.25, 0.5)}
    assert len(identities) == 6
    shrunk = make_noise("dsmooth", 0.25, cov.with_shrinkage(0.5))
    assert make_noise("dsmooth", 0.25, cov).identity() != shrunk.identity()


# ---------------------------------------------------------------- slices
def test_l2_slice_is_a_circle_of_radius_r_in_any_plane() -> None:
    e1, e2 = orthonormal_pair(12, 0)
    r = IsotropicGaussian(0.3).slice_radii(0.7, e1, e2, TURN, (3, 2, 2))
    assert r.numpy() == pytest.approx([0.7] * len(TURN))


def test_l1_slice_in_a_coordinate_plane_is_the_diamond_with_vertices_at_plus_minus_r() -> None:
    d, radius = 12, 1.5
    theta = torch.tensor([0.0, math.pi / 2, math.pi, 3 * math.pi / 2, math.pi / 4], dtype=torch.float64)
    r = Laplace(0.1).slice_radii(radius, axis(d, 3), axis(d, 7), theta, (3, 2, 2))
    assert r[:4].numpy() == pytest.approx([radius] * 4)  # vertices +-R e1, +-R e2
    assert float(r[4]) == pytest.approx(radius / math.sqrt(2))  # the edge midpoint (R/2, R/2)
    r = Laplace(0.1).slice_radii(radius, axis(d, 3), axis(d, 7), TURN, (3, 2, 2))
    xs, ys = r * torch.cos(TURN), r * torch.sin(TURN)
    assert (xs.abs() + ys.abs()).numpy() == pytest.approx([radius] * len(TURN))


def test_l1_slice_in_a_dense_plane_is_much_smaller_than_the_disc() -> None:
    d = 1024
    e1, e2 = orthonormal_pair(d, 0)
    r = Laplace(0.1).slice_radii(1.0, e1, e2, TURN[:91], (1, 32, 32))
    assert float(r.max()) < 0.1  # ||e||_1 ~ sqrt(2d/pi) for a dense unit vector
    assert float(r.min()) >= 1 / math.sqrt(d) - 1e-12  # ||v||_1 <= sqrt(d) ||v||_2


def test_ellipse_axes_for_a_diagonal_st() -> None:
    cov = diagonal_covariance(top=4.0, residual=1.0)  # d = 4, gm = 4^(1/4)
    gm, radius = 4.0**0.25, 0.8
    r = AnisotropicGaussian(0.1, cov).slice_radii(radius, axis(4, 0), axis(4, 1), TURN, cov.shape)
    assert float(r[0]) == pytest.approx(radius * math.sqrt(4 / gm))  # long axis along the eigen-direction
    assert float(r[90]) == pytest.approx(radius * math.sqrt(1 / gm))
    assert (float(r.min()), float(r.max())) == pytest.approx((radius * math.sqrt(1 / gm), radius * math.sqrt(4 / gm)))


def test_dsmooth_closed_form_matches_the_generic_slice_and_the_dense_inverse() -> None:
    g = torch.Generator().manual_seed(1)
    perturbations = torch.randn(30, 2, 3, 3, generator=g) * torch.linspace(0.1, 2, 18).reshape(2, 3, 3)
    cov = LowRankCovariance.fit(perturbations, k=5)
    noise = AnisotropicGaussian(0.2, cov)
    e1, e2 = orthonormal_pair(18, 2)
    fast = noise.slice_radii(0.9, e1, e2, TURN, cov.shape)
    generic = SmoothingNoise.slice_radii(noise, 0.9, e1, e2, TURN, cov.shape)
    assert fast.numpy() == pytest.approx(generic.numpy(), rel=1e-9)
    units = torch.cos(TURN)[:, None] * e1 + torch.sin(TURN)[:, None] * e2
    quad = torch.einsum("ni,ij,nj->n", units, dense_st_inverse(cov), units)
    assert fast.numpy() == pytest.approx((0.9 / quad.sqrt()).numpy(), rel=1e-9)


def test_top_direction_is_the_first_eigenvector_of_dsmooth_only() -> None:
    cov = diagonal_covariance()
    assert IsotropicGaussian(0.1).top_direction() is None and Laplace(0.1).top_direction() is None
    assert torch.equal(AnisotropicGaussian(0.1, cov).top_direction(), axis(4, 0))


# ---------------------------------------------------------------- shared-metric radii
def test_guarantees_in_shared_metrics() -> None:
    d, r = 3072, 0.9
    iso = IsotropicGaussian(0.25)
    assert iso.equal_volume_l2_radius(r, d) == r
    assert iso.linf_lower_bound(r, d) == pytest.approx(r / math.sqrt(d))
    lap = Laplace.from_sigma(0.25)
    assert lap.linf_lower_bound(r, d) == pytest.approx(r / d)
    cov = diagonal_covariance(top=4.0, residual=1.0)
    ds = AnisotropicGaussian(0.25, cov)
    assert ds.equal_volume_l2_radius(r, cov.dim) == r  # det St = 1
    assert ds.linf_lower_bound(r, cov.dim) == pytest.approx(r * math.sqrt(cov.mu_min / cov.dim))
    with pytest.raises(ValueError, match="pixels"):
        ds.linf_lower_bound(r, cov.dim + 1)


def test_equal_volume_radius_of_the_l1_ball_in_low_dimensions() -> None:
    lap = Laplace(0.1)
    assert lap.equal_volume_l2_radius(2.0, 1) == pytest.approx(2.0)  # both are [-R, R]
    # d = 2: the diamond has area 2 R^2, the disc pi r^2
    assert lap.equal_volume_l2_radius(1.0, 2) == pytest.approx(math.sqrt(2 / math.pi))
    # Stirling: r / R -> sqrt(2 e / (pi d)) for large d
    d = 3072
    assert lap.equal_volume_l2_radius(1.0, d) == pytest.approx(math.sqrt(2 * math.e / (math.pi * d)), rel=1e-3)
    assert lap.equal_volume_l2_radius(0.0, d) == 0.0 and lap.equal_volume_l2_radius(math.inf, d) == math.inf


# ---------------------------------------------------------------- compare
def test_compare_uses_each_methods_own_metric() -> None:
    delta = torch.zeros(1, 2, 2)
    delta[0, 0, 0] = 0.3
    delta[0, 1, 1] = -0.4  # l2 = 0.5, l1 = 0.7
    iso, lap = IsotropicGaussian(0.1), Laplace(0.1)
    inside = compare(certificate(iso, 1, 0.6), iso, delta, label=1)
    assert (inside.distance, inside.inside, inside.certified) == (pytest.approx(0.5), True, True)
    assert compare(certificate(iso, 1, 0.6), iso, delta, label=2).certified is False  # wrong label
    assert compare(certificate(iso, 1, 0.6), iso, delta).certified is None  # label unknown
    outside = compare(certificate(lap, 1, 0.6), lap, delta, label=1)
    assert (outside.distance, outside.inside, outside.certified) == (pytest.approx(0.7), False, False)
    cov = diagonal_covariance()
    ds = AnisotropicGaussian(0.1, cov)
    result = compare(certificate(ds, 1, 10.0), ds, delta, label=1)
    assert result.distance == pytest.approx(float(cov.mahalanobis(delta))) and result.inside
    assert result.l2_inscribed == ds.inscribed_l2_radius(10.0, 4) and result.l1_inscribed == ds.inscribed_l1_radius(
        10.0, 4
    )
    assert result.metric == "mahalanobis" and result.radius == 10.0


def test_compare_an_abstention_certifies_nothing() -> None:
    iso = IsotropicGaussian(0.1)
    result = compare(certificate(iso, ABSTAIN, 0.0), iso, torch.zeros(1, 2, 2), label=1)
    assert (result.inside, result.certified) == (False, False)
    assert (result.l2_inscribed, result.l1_inscribed, result.linf_lower_bound, result.equal_volume_l2) == (0, 0, 0, 0)


def test_compare_refuses_a_mismatched_noise_or_a_missing_dimension() -> None:
    iso = IsotropicGaussian(0.1)
    with pytest.raises(ValueError, match="cannot be compared"):
        compare(certificate(iso, 1, 0.5), Laplace(0.1), None, dim=4)
    with pytest.raises(ValueError, match="dim"):
        compare(certificate(iso, 1, 0.5), iso, None)
