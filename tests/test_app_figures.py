"""The app's pure helpers on hand-made inputs: slice geometry, comparisons, tables, figures, images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsmooth_core import ABSTAIN, AnisotropicGaussian, IsotropicGaussian, Laplace, LowRankCovariance
from dsmooth_lab_ui import compare, figures, reports, slices
from dsmooth_lab_ui.images import eigen_images, signed_to_uint8, to_uint8, upscale


def diagonal_covariance(top: float = 4.0, residual: float = 1.0, shape=(1, 2, 2)) -> LowRankCovariance:
    """S = diag(top, residual, residual, ...): one eigen-direction along the first pixel."""
    d = math.prod(shape)
    u = torch.zeros(d, 1, dtype=torch.float64)
    u[0, 0] = 1.0
    return LowRankCovariance(
        shape=shape,
        eigenvectors=u,
        base_eigenvalues=torch.tensor([top], dtype=torch.float64),
        base_residual=residual,
        trace=top + (d - 1) * residual,
    )


def dense_st_inverse(cov: LowRankCovariance) -> torch.Tensor:
    """St^-1 formed explicitly (test oracle; fine for tiny d)."""
    u, lam, rho2 = cov.eigenvectors, cov.eigenvalues, cov.residual_variance
    s = u @ torch.diag(lam - rho2) @ u.T + rho2 * torch.eye(cov.dim, dtype=torch.float64)
    return torch.linalg.inv(s / cov.geometric_mean)


def axis(d: int, i: int) -> torch.Tensor:
    v = torch.zeros(d, dtype=torch.float64)
    v[i] = 1.0
    return v


# ---------------------------------------------------------------- slices
def test_l2_slice_is_a_disc_of_radius_r() -> None:
    xs, ys = slices.disc_boundary(0.7, count=181)
    assert np.allclose(np.hypot(xs, ys), 0.7)
    assert (xs[0], ys[0]) == pytest.approx((xs[-1], ys[-1]))


def test_l1_slice_in_a_coordinate_plane_is_the_diamond_with_vertices_at_plus_minus_r() -> None:
    d, radius = 12, 1.5
    basis = slices.plane_basis(axis(d, 3), axis(d, 7), d)
    theta = np.array([0.0, np.pi / 2, np.pi, 3 * np.pi / 2, np.pi / 4])
    r = radius / slices.l1_norms_along(basis, theta)
    assert r[:4] == pytest.approx([radius] * 4)  # vertices +-R e1, +-R e2
    assert r[4] == pytest.approx(radius / math.sqrt(2))  # the edge midpoint (R/2, R/2)
    xs, ys = slices.l1_boundary(basis, radius, count=361)
    assert np.allclose(np.abs(xs) + np.abs(ys), radius)


def test_l1_slice_in_a_dense_plane_is_much_smaller_than_the_disc() -> None:
    d = 1024
    g = torch.Generator().manual_seed(0)
    basis = slices.plane_basis(torch.randn(d, generator=g), torch.randn(d, generator=g), d)
    xs, ys = slices.l1_boundary(basis, 1.0, count=91)
    assert np.hypot(xs, ys).max() < 0.1  # ||e||_1 ~ sqrt(2d/pi) for a dense unit vector
    assert np.hypot(xs, ys).min() >= 1 / math.sqrt(d) - 1e-12  # ||v||_1 <= sqrt(d) ||v||_2


def test_ellipse_axes_for_a_diagonal_st() -> None:
    cov = diagonal_covariance(top=4.0, residual=1.0)  # d = 4, gm = 4^(1/4)
    gm = 4.0**0.25
    basis = slices.plane_basis(axis(4, 0), axis(4, 1), 4)
    form = slices.restricted_form(cov.mahalanobis, basis, cov.shape)
    assert form == pytest.approx(np.diag([gm / 4.0, gm / 1.0]))
    radius = 0.8
    semi = slices.ellipse_semi_axes(form, radius)
    assert semi == pytest.approx(sorted([radius * math.sqrt(4 / gm), radius * math.sqrt(1 / gm)]))
    xs, ys = slices.ellipse_boundary(form, radius, count=8 * 45 + 1)
    assert xs[0] == pytest.approx(radius * math.sqrt(4 / gm))  # long axis along the eigen-direction
    assert ys[90] == pytest.approx(radius * math.sqrt(1 / gm))
    points = torch.as_tensor(np.outer(xs, basis.e1) + np.outer(ys, basis.e2)).reshape(-1, *cov.shape)
    assert cov.mahalanobis(points).numpy() == pytest.approx(np.full(len(xs), radius))


def test_restricted_form_matches_the_dense_inverse_in_an_oblique_plane() -> None:
    g = torch.Generator().manual_seed(1)
    perturbations = torch.randn(30, 2, 3, 3, generator=g) * torch.linspace(0.1, 2, 18).reshape(2, 3, 3)
    cov = LowRankCovariance.fit(perturbations, k=5)
    basis = slices.plane_basis(torch.randn(18, generator=g), torch.randn(18, generator=g), 18)
    form = slices.restricted_form(cov.mahalanobis, basis, cov.shape)
    inv = dense_st_inverse(cov)
    e = torch.stack([basis.e1, basis.e2])
    assert form == pytest.approx((e @ inv @ e.T).numpy(), rel=1e-9)


def test_plane_basis_orthonormalises_and_replaces_degenerate_directions() -> None:
    d = 20
    v = torch.arange(d, dtype=torch.float64)
    basis = slices.plane_basis(v, 3 * v, d, label1="attack", label2="u1")
    assert float(basis.e1 @ basis.e2) == pytest.approx(0.0, abs=1e-12)
    assert float(basis.e1.norm()) == pytest.approx(1.0) and float(basis.e2.norm()) == pytest.approx(1.0)
    assert basis.label1 == "attack" and basis.label2 == "random direction"  # parallel second replaced
    ok = slices.plane_basis(v, torch.ones(d), d, label2="u1")
    assert ok.label2 == "u1"
    a, b = slices.coordinates(v, ok)
    assert (a, b) == pytest.approx((float(v.norm()), 0.0))
    assert slices.off_plane_norm(v, ok) == pytest.approx(0.0, abs=1e-9)
    assert slices.plane_basis(None, None, d).label1 == "random direction"


# ---------------------------------------------------------------- comparisons
def test_guarantees_in_shared_metrics() -> None:
    d, r = 3072, 0.9
    iso = compare.guarantee(IsotropicGaussian(0.25), r, d)
    assert (iso.l2_every_direction, iso.l1, iso.equal_volume_l2) == (r, r, r)
    assert iso.linf_lower_bound == pytest.approx(r / math.sqrt(d))
    lap = compare.guarantee(Laplace.from_sigma(0.25), r, d)
    assert lap.l1 == r and lap.l2_every_direction == pytest.approx(r / math.sqrt(d))
    assert lap.linf_lower_bound == pytest.approx(r / d)
    cov = diagonal_covariance(top=4.0, residual=1.0)
    noise = AnisotropicGaussian(0.25, cov)
    ds = compare.guarantee(noise, r, cov.dim)
    assert ds.l2_every_direction == pytest.approx(r * math.sqrt(cov.mu_min))
    assert ds.l1 == pytest.approx(noise.inscribed_l1_radius(r, cov.dim))
    assert ds.equal_volume_l2 == r  # det St = 1
    assert compare.guarantee(IsotropicGaussian(0.25), 0.0, d).l2_every_direction == 0.0


def test_equal_volume_radius_of_the_l1_ball_in_low_dimensions() -> None:
    assert compare.l1_ball_equal_volume_l2_radius(2.0, 1) == pytest.approx(2.0)  # both are [-R, R]
    # d = 2: the diamond has area 2 R^2, the disc pi r^2
    assert compare.l1_ball_equal_volume_l2_radius(1.0, 2) == pytest.approx(math.sqrt(2 / math.pi))
    # Stirling: r / R -> sqrt(2 e / (pi d)) for large d
    d = 3072
    assert compare.l1_ball_equal_volume_l2_radius(1.0, d) == pytest.approx(
        math.sqrt(2 * math.e / (math.pi * d)), rel=1e-3
    )


def test_inside_uses_each_methods_own_metric() -> None:
    delta = torch.zeros(1, 2, 2)
    delta[0, 0, 0] = 0.3
    delta[0, 1, 1] = -0.4  # l2 = 0.5, l1 = 0.7
    assert compare.inside(IsotropicGaussian(0.1), 0.6, delta) == (pytest.approx(0.5), True)
    assert compare.inside(Laplace(0.1), 0.6, delta) == (pytest.approx(0.7), False)
    assert compare.inside(IsotropicGaussian(0.1), 0.0, torch.zeros(1, 2, 2))[1] is False
    cov = diagonal_covariance()
    size, _ = compare.inside(AnisotropicGaussian(0.1, cov), 10.0, delta)
    assert size == pytest.approx(float(cov.mahalanobis(delta)))


def test_shape_summary_of_an_isotropic_profile_is_a_ball() -> None:
    cov = diagonal_covariance(top=2.0, residual=1.0).with_shrinkage(1.0)
    shape = compare.shape_summary(cov)
    assert shape["mu_min"] == pytest.approx(1.0) and shape["axis_ratio"] == pytest.approx(1.0)
    assert shape["inscribed_log_volume_ratio"] == pytest.approx(0.0, abs=1e-12)
    aniso = compare.shape_summary(diagonal_covariance(top=4.0, residual=1.0))
    assert aniso["axis_ratio"] == pytest.approx(2.0)
    assert aniso["inscribed_log_volume_ratio"] == pytest.approx(4 / 2 * math.log(aniso["mu_min"]))
    assert compare.cumulative_explained(diagonal_covariance(top=4.0, residual=1.0)) == pytest.approx([4 / 7])


# ---------------------------------------------------------------- tables and the slice figure
def fake_certificate(method: str, metric: str, prediction: int, radius: float) -> dict:
    counts = [0, 45, 5] if prediction != ABSTAIN else [20, 25, 5]
    return {
        "prediction": prediction,
        "radius": radius,
        "metric": metric,
        "method": method,
        "p_lower": 0.8 if prediction != ABSTAIN else 0.4,
        "counts_selection": (0, 10, 0),
        "counts_estimation": tuple(counts),
        "n0": 10,
        "n": 50,
        "alpha": 0.001,
        "radius_ceiling": 0.5,
        "seconds": 0.1,
    }


def test_result_and_comparison_rows_label_every_radius() -> None:
    cov = diagonal_covariance()
    results = {
        "RandSmooth": fake_certificate("RandSmooth", "l2", 1, 0.2),
        "DSmooth": fake_certificate("DSmooth", "mahalanobis", 1, 0.3),
        "LSmooth": fake_certificate("LSmooth", "l1", ABSTAIN, 0.0),
    }
    noises = {
        "RandSmooth": IsotropicGaussian(0.1),
        "DSmooth": AnisotropicGaussian(0.1, cov),
        "LSmooth": Laplace.from_sigma(0.1),
    }
    rows = reports.result_rows(results, ["a", "b", "c"], true_label=1)
    assert [r["method"] for r in rows] == ["DSmooth", "RandSmooth", "LSmooth"]
    assert [r["radius metric"] for r in rows] == ["Mahalanobis (St)", "l2", "l1"]
    assert rows[2]["prediction"] == "ABSTAIN" and rows[2]["correct"] is None
    assert rows[0]["correct"] is True
    delta = torch.zeros(1, 2, 2)
    delta[0, 0, 1] = 0.1
    comparison = reports.comparison_rows(results, noises, delta, 4, true_label=1)
    by_method = {r["method"]: r for r in comparison}
    assert by_method["RandSmooth"]["attack inside region"] is True
    assert by_method["RandSmooth"]["certified against the attack"] is True
    assert by_method["LSmooth"]["certified against the attack"] is False
    assert by_method["DSmooth"]["l2 radius in every direction"] == pytest.approx(0.3 * math.sqrt(cov.mu_min))
    no_attack = reports.comparison_rows(results, noises, None, 4, true_label=1)
    assert "attack inside region" not in no_attack[0]


def test_slice_figure_draws_each_certified_region_and_the_attack() -> None:
    cov = diagonal_covariance(top=4.0, residual=1.0)
    results = {
        "DSmooth": fake_certificate("DSmooth", "mahalanobis", 1, 0.3),
        "RandSmooth": fake_certificate("RandSmooth", "l2", 1, 0.2),
        "LSmooth": fake_certificate("LSmooth", "l1", ABSTAIN, 0.0),
    }
    noises = {
        "DSmooth": AnisotropicGaussian(0.1, cov),
        "RandSmooth": IsotropicGaussian(0.1),
        "LSmooth": Laplace.from_sigma(0.1),
    }
    delta = torch.zeros(1, 2, 2)
    delta[0, 1, 0] = 0.25
    fig, basis = reports.slice_figure(results, noises, delta, (1, 2, 2), count=181)
    names = [t.name for t in fig.data]
    assert names[0].startswith("DSmooth: Mahalanobis (St) ball") and names[1].startswith("RandSmooth: l2 ball")
    assert "LSmooth: abstained (no region)" in names and "x + attack perturbation" in names
    star = fig.data[names.index("x + attack perturbation")]
    assert (star.x[0], star.y[0]) == pytest.approx((0.25, 0.0))
    assert np.hypot(fig.data[1].x, fig.data[1].y) == pytest.approx(np.full(181, 0.2))
    assert basis.label2.startswith("along DSmooth's top eigen-direction")
    assert fig.layout.yaxis.scaleanchor == "x"


# ---------------------------------------------------------------- figures
def test_probability_bar_sorts_and_marks_the_true_class() -> None:
    fig = figures.probability_bar(["cat", "dog", "ship"], [0.2, 0.7, 0.1], true_label=0, top=2)
    bar = fig.data[0]
    assert list(bar.y) == ["dog", "cat (true)"] and list(bar.x) == pytest.approx([0.7, 0.2])


def test_image_grid_embeds_one_png_per_cell() -> None:
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    fig = figures.image_grid([[img, None], [img, img]], row_titles=["a", "b"], col_titles=["s0", "s1"])
    assert [t.type for t in fig.data] == ["image"] * 3
    assert all(t.source.startswith("data:image/png;base64,") for t in fig.data)
    texts = [a.text for a in fig.layout.annotations]
    assert {"a", "b", "s0", "s1"} <= set(texts)


def test_heatmaps_share_one_scale_and_votes_are_grouped() -> None:
    fig = figures.heatmap_row([np.ones((4, 4)), 3 * np.ones((4, 4))], ["A", "B"], colorbar_title="variance")
    assert [t.zmax for t in fig.data] == [3.0, 3.0]
    votes = figures.vote_histogram({"RandSmooth": [1, 9, 0], "DSmooth": [5, 5, 0]}, ["a", "b", "c"], top=2)
    assert [t.name for t in votes.data] == ["RandSmooth", "DSmooth"] and list(votes.data[0].x) == ["b", "a"]


def test_spectrum_and_explained_variance_figures() -> None:
    fig = figures.spectrum_figure([4.0, 2.0, 1.0], [4.0, 2.0], residual_fitted=0.5, residual_effective=0.6, k_used=2)
    assert fig.layout.yaxis.type == "log"
    assert [t.name for t in fig.data][2:] == ["fitted residual rho^2", "residual rho^2 in use"]
    assert list(fig.data[3].y) == [0.6, 0.6]
    ev = figures.explained_variance_figure([0.5, 0.75, 0.9], k_used=2)
    assert list(ev.data[0].y) == [0.5, 0.75, 0.9]


def test_guarantee_bars_only_use_shared_metrics() -> None:
    rows = [{"method": "DSmooth", "l2 radius in every direction": 0.1, "l1 radius": 0.2, "R (own metric)": 9.0}]
    fig = figures.guarantee_bars(rows)
    assert list(fig.data[0].y) == [0.1, 0.2]  # the own-metric radius is never drawn next to l2 radii
    assert all("guaranteed" in x for x in fig.data[0].x)


# ---------------------------------------------------------------- images
def test_display_conversions() -> None:
    x = torch.tensor([[[-0.5, 0.5], [1.0, 2.0]]]).expand(3, 2, 2)
    out = to_uint8(x)
    assert out.shape == (2, 2, 3) and out[0, 0, 0] == 0 and out[1, 1, 0] == 255 and out[0, 1, 0] == 128
    grey, factor = signed_to_uint8(torch.zeros(3, 2, 2))
    assert (grey == 128).all() and factor == 0.5
    shown, factor = signed_to_uint8(torch.tensor([0.1, -0.1]).reshape(1, 1, 2))
    assert factor == pytest.approx(5.0) and shown[0, 0, 0] == 255 and shown[0, 1, 0] == 0
    assert upscale(np.zeros((2, 3, 3), dtype=np.uint8), 4).shape == (8, 12, 3)
    pictures = eigen_images(torch.eye(12, 3, dtype=torch.float64), (3, 2, 2), 5)
    assert len(pictures) == 3 and pictures[0].shape == (2, 2, 3)
