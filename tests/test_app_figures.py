"""The app's pure helpers on hand-made inputs: slice planes, profile shape, tables, figures, images."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsmooth_core import ABSTAIN, AnisotropicGaussian, IsotropicGaussian, Laplace, LowRankCovariance
from dsmooth_core.attacks import PRESETS
from dsmooth_core.profiles import ThreatProfile
from dsmooth_lab_ui import bundled_profiles, figures, profile_shape, reports, slices
from dsmooth_lab_ui.images import eigen_images, signed_to_uint8, to_uint8, upscale
from tests.fakecerts import certificate
from tests.oracles import dense_normalized, diagonal_covariance


# ---------------------------------------------------------------- slices
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
    assert slices.plane_basis(None, None, d).label1 == "random direction"


def test_region_boundary_closes_and_lies_on_the_region_in_the_methods_metric() -> None:
    cov = diagonal_covariance(top=4.0, residual=1.0)
    g = torch.Generator().manual_seed(3)
    basis = slices.plane_basis(torch.randn(4, generator=g), torch.randn(4, generator=g), 4)
    for noise in (IsotropicGaussian(0.1), Laplace(0.1), AnisotropicGaussian(0.1, cov)):
        xs, ys = slices.region_boundary(noise, 0.6, basis, cov.shape, count=91)
        assert (xs[0], ys[0]) == pytest.approx((xs[-1], ys[-1]))
        points = torch.as_tensor(np.outer(xs, basis.e1) + np.outer(ys, basis.e2)).reshape(-1, *cov.shape)
        assert noise.distance(points).numpy() == pytest.approx(np.full(91, 0.6))


# ---------------------------------------------------------------- profile shape
def test_shape_summary_of_an_isotropic_profile_is_a_ball() -> None:
    cov = diagonal_covariance(top=2.0, residual=1.0).with_shrinkage(1.0)
    shape = profile_shape.shape_summary(cov)
    assert shape["mu_min"] == pytest.approx(1.0) and shape["axis_ratio"] == pytest.approx(1.0)
    assert shape["inscribed_log_volume_ratio"] == pytest.approx(0.0, abs=1e-12)
    aniso = profile_shape.shape_summary(diagonal_covariance(top=4.0, residual=1.0))
    assert aniso["axis_ratio"] == pytest.approx(2.0)
    assert aniso["longest_axis_factor"] == pytest.approx(aniso["axis_ratio"] * aniso["inscribed_radius_factor"])
    assert aniso["inscribed_log_volume_ratio"] == pytest.approx(4 / 2 * math.log(aniso["mu_min"]))
    assert profile_shape.cumulative_explained(diagonal_covariance(top=4.0, residual=1.0)) == pytest.approx([4 / 7])


def test_shape_summary_of_a_trace_normalized_profile_counts_its_smaller_volume() -> None:
    cov = diagonal_covariance(top=4.0, residual=1.0).with_normalization("trace")
    shape = profile_shape.shape_summary(cov)
    _, logdet = np.linalg.slogdet(dense_normalized(cov))
    assert shape["logdet_St"] == pytest.approx(logdet) and logdet < 0
    assert shape["equal_volume_factor"] == pytest.approx(math.exp(logdet / 8))
    mu_min = float(np.linalg.eigvalsh(dense_normalized(cov)).min())
    assert shape["inscribed_log_volume_ratio"] == pytest.approx(4 / 2 * math.log(mu_min) - logdet / 2)
    assert profile_shape.shape_summary(cov.with_normalization("det"))["logdet_St"] == pytest.approx(0, abs=1e-12)


# ---------------------------------------------------------------- the bundled profiles' descriptions
def _profile(cov: LowRankCovariance, attack: dict) -> ThreatProfile:
    return ThreatProfile(cov, "toy", "0" * 64, "cifar10", "train", tuple(range(30)), attack, "nonzero", 30, 30, 0)


def test_bundled_profile_texts_read_every_number_from_the_profile() -> None:
    paper_attack = PRESETS["paper"].to_dict()
    assert bundled_profiles.threat_text(paper_attack) == (
        "the *paper* threat (Square at eps_inf = 0.5, then an l2 FGSM step of 0.5)"
    )
    other = {**PRESETS["reachable"].to_dict(), "eps_inf": 3 / 255}
    assert bundled_profiles.threat_text(other) == (
        "the threat (Square at eps_inf = 3/255, then FGSM projected back into that ball)"
    )
    cov = diagonal_covariance(top=4.0, residual=1.0).with_shrinkage(0.25)
    assert bundled_profiles.knobs_text(cov) == "det normalization, k = 1, shrinkage 0.25"
    untuned = bundled_profiles.tuned_text("toy.pt", _profile(cov, other))
    assert "on 30 training images" in untuned and "no tuning record" in untuned
    alone = bundled_profiles.paper_text("paper.pt", _profile(cov, paper_attack), None)
    assert "fitted on 30 training images" in alone and alone.endswith("at the same sigma.")
    assert f"sqrt(mu_max) = {math.sqrt(cov.mu_max):.3g} times" in alone
    assert bundled_profiles.short_knobs_text(cov.with_normalization("trace")) == "trace, k = 1"
    caption = bundled_profiles.bundled_caption(None, _profile(cov, paper_attack))
    assert "(toy)" in caption and "**Tuned**" not in caption and "det normalization, k = 1, shrinkage 0.25" in caption
    assert bundled_profiles.bundled_caption(None, None) == "The bundled profiles could not be read."


# ---------------------------------------------------------------- tables and the slice figure
def three_results(cov: LowRankCovariance, order=("RandSmooth", "DSmooth", "LSmooth")) -> list:
    """RandSmooth and DSmooth certify class 1 (R = 0.2, 0.3); LSmooth abstains."""
    pairs = {
        "RandSmooth": (IsotropicGaussian(0.1), 1, 0.2),
        "DSmooth": (AnisotropicGaussian(0.1, cov), 1, 0.3),
        "LSmooth": (Laplace.from_sigma(0.1), ABSTAIN, 0.0),
    }
    return [(pairs[m][0], certificate(*pairs[m])) for m in order]


def test_result_and_comparison_rows_label_every_radius() -> None:
    cov = diagonal_covariance()
    results = three_results(cov)
    rows = reports.result_rows(results, ["a", "b", "c"], true_label=1)
    assert [r["method"] for r in rows] == ["DSmooth", "RandSmooth", "LSmooth"]
    assert [r["radius metric"] for r in rows] == ["Mahalanobis (St)", "l2", "l1"]
    assert [r["certified region"] for r in rows] == ["Mahalanobis ball of St (ellipsoid)", "l2 ball", "l1 ball"]
    assert rows[2]["prediction"] == "ABSTAIN" and rows[2]["correct"] is None
    assert rows[0]["correct"] is True
    assert rows[0]["votes for top class (of n)"] == "45 / 55"  # the selected class's estimation votes
    assert rows[2]["votes for top class (of n)"] == "25 / 50"
    delta = torch.zeros(1, 2, 2)
    delta[0, 0, 1] = 0.1
    comparison = reports.comparison_rows(results, delta, 4, true_label=1)
    by_method = {r["method"]: r for r in comparison}
    assert by_method["RandSmooth"]["attack inside region"] is True
    assert by_method["RandSmooth"]["certified against the attack"] is True
    assert by_method["LSmooth"]["certified against the attack"] is False
    assert by_method["DSmooth"]["l2 radius in every direction"] == pytest.approx(0.3 * math.sqrt(cov.mu_min))
    assert by_method["DSmooth"]["attack size (own metric)"] == pytest.approx(float(cov.mahalanobis(delta)))
    no_attack = reports.comparison_rows(results, None, 4, true_label=1)
    assert "attack inside region" not in no_attack[0]
    unknown_label = reports.comparison_rows(results, delta, 4, true_label=None)
    assert unknown_label[1]["attack inside region"] is True and unknown_label[1]["certified against the attack"] is None


def test_slice_figure_draws_each_certified_region_and_the_attack() -> None:
    cov = diagonal_covariance(top=4.0, residual=1.0)
    results = three_results(cov, order=("LSmooth", "RandSmooth", "DSmooth"))
    delta = torch.zeros(1, 2, 2)
    delta[0, 1, 0] = 0.25
    fig, basis = reports.slice_figure(results, delta, (1, 2, 2), count=181)
    names = [t.name for t in fig.data]
    assert names[0].startswith("DSmooth: Mahalanobis (St) ball") and names[1].startswith("RandSmooth: l2 ball")
    assert "LSmooth: abstained (no region)" in names and "x + attack perturbation" in names
    star = fig.data[names.index("x + attack perturbation")]
    assert (star.x[0], star.y[0]) == pytest.approx((0.25, 0.0))
    assert np.hypot(fig.data[1].x, fig.data[1].y) == pytest.approx(np.full(181, 0.2))
    assert basis.label2.startswith("along DSmooth's top eigen-direction")
    assert fig.layout.yaxis.scaleanchor == "x"
    assert fig.data[0].line.color == AnisotropicGaussian.color and fig.data[1].line.color == IsotropicGaussian.color


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
