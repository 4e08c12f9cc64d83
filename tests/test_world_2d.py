"""The 2-D world against closed forms (docs/MATH.md section 7) and its page under AppTest.

A linear classifier of the plane, f(x) = [w.x > b] with |w| = 1, smoothed by N(0, C) has
P(f(x + e) = 1) = Phi((w.x - b) / sqrt(w^T C w)): the true robust radius is the distance to the line
in each Gaussian method's metric, so the certificate must stay below it and approach it as n grows.
St and the distances used as references are built here with numpy, independently of the core.
"""

from __future__ import annotations

import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from streamlit.testing.v1 import AppTest

from dsmooth_core.noise import AnisotropicGaussian, IsotropicGaussian, Laplace
from dsmooth_lab_ui import world_2d, world_2d_view
from tests.test_browser import CHROMIUM, LAUNCH_ARGS, app_server, wait_idle  # noqa: F401 (a fixture)

APP = Path(__file__).resolve().parents[1] / "app.py"
PAGE = "pages/world_2d.py"
SIGMA = 0.1
N_LARGE = 100_000
ALPHA = 0.001
ANGLE, RATIO = 30.0, 3.0


def _line(degrees: float, offset: float) -> tuple[np.ndarray, float]:
    t = math.radians(degrees)
    return np.array([math.cos(t), math.sin(t)]), offset


def _point_at(normal: np.ndarray, offset: float, base: tuple[float, float], signed: float) -> tuple[float, float]:
    """The point whose signed distance w.x - b to the line is ``signed``, moved from ``base`` along w."""
    base_arr = np.asarray(base)
    point = base_arr + (signed - (normal @ base_arr - offset)) * normal
    return float(point[0]), float(point[1])


def _st_dense(degrees: float, ratio: float) -> np.ndarray:
    """R diag(ratio^2, 1) R^T scaled to determinant 1: the St the core must build."""
    t = math.radians(degrees)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    cov = rot @ np.diag([ratio**2, 1.0]) @ rot.T
    return cov / math.sqrt(np.linalg.det(cov))


def _lowest_radius(noise, p: float, n: int) -> float:
    """The radius at p minus 5 binomial standard deviations: a certificate below it is far too small."""
    return noise.radius(p - 5 * math.sqrt(p * (1 - p) / n))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The app runs a page's small torch work on one thread (dsmooth_lab_ui.threads); tiny models train
    many times slower with two threads on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- closed forms
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_isotropic_certificate_of_a_line_is_sound_exact_in_formula_and_close_to_the_distance(seed: int) -> None:
    normal, offset = _line(20.0, 0.6)
    distance = 0.1
    point = _point_at(normal, offset, (0.5, 0.5), distance)
    model = world_2d.linear_classifier(tuple(normal), offset)
    noise = IsotropicGaussian(SIGMA)
    cert = world_2d.certify_point(model, point, noise, 100, N_LARGE, ALPHA, seed)
    p_exact = norm.cdf(distance / SIGMA)
    assert cert.prediction == 1 and cert.metric == "l2"
    assert cert.radius == pytest.approx(SIGMA * norm.ppf(cert.p_lower), rel=1e-12)
    assert cert.p_lower <= p_exact
    assert cert.radius <= distance
    assert cert.radius >= _lowest_radius(noise, p_exact, N_LARGE)  # about 0.985 of the distance


def test_grid_shares_are_the_closed_form_probability() -> None:
    normal, offset = _line(-35.0, 0.1)
    model = world_2d.linear_classifier(tuple(normal), offset)
    grid = world_2d.Grid(10)
    draws = 4000
    shares = world_2d.smoothed_shares(model, grid, IsotropicGaussian(SIGMA), draws, seed=3)
    exact = norm.cdf((grid.points @ normal - offset) / SIGMA).reshape(10, 10)
    assert np.abs(shares - exact).max() < 5 * 0.5 / math.sqrt(draws)
    base = world_2d.base_regions(model, grid)
    assert np.array_equal(base, (grid.points @ normal > offset).reshape(10, 10).astype(base.dtype))


def test_drawn_covariance_is_the_closed_form_st() -> None:
    noise = AnisotropicGaussian(SIGMA, world_2d.ellipse_covariance(ANGLE, RATIO))
    st_inv = np.linalg.inv(_st_dense(ANGLE, RATIO))
    deltas = np.random.default_rng(0).normal(size=(20, 2))
    expected = np.sqrt(np.einsum("bi,ij,bj->b", deltas, st_inv, deltas))
    got = noise.distance(torch.from_numpy(deltas).reshape(-1, *world_2d.SHAPE)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)
    draws = noise.sample(200_000, world_2d.SHAPE, torch.Generator().manual_seed(0)).reshape(-1, 2).double()
    np.testing.assert_allclose(np.cov(draws.numpy().T), SIGMA**2 * _st_dense(ANGLE, RATIO), atol=3e-4)


@pytest.mark.parametrize("line_degrees", [0.0, 75.0, 150.0])
def test_anisotropic_certificate_of_a_line_is_the_mahalanobis_distance_to_it(line_degrees: float) -> None:
    normal, _ = _line(line_degrees, 0.0)
    offset = float(normal @ [0.5, 0.5])  # the line through the square's centre
    st = _st_dense(ANGLE, RATIO)
    spread = math.sqrt(normal @ st @ normal)
    mahalanobis = 0.8 * SIGMA  # the closed-form robust radius, (w.x - b) / sqrt(w^T St w)
    point = _point_at(normal, offset, (0.5, 0.5), mahalanobis * spread)
    noise = AnisotropicGaussian(SIGMA, world_2d.ellipse_covariance(ANGLE, RATIO))
    # the nearest point of the line in the metric of St is x - (w.x - b) St w / (w^T St w), at that distance
    foot = np.asarray(point) - mahalanobis * spread * (st @ normal) / spread**2
    assert normal @ foot == pytest.approx(offset)
    to_foot = torch.from_numpy(foot - np.asarray(point)).reshape(world_2d.SHAPE)
    assert float(noise.distance(to_foot)) == pytest.approx(mahalanobis, rel=1e-9)

    model = world_2d.linear_classifier(tuple(normal), offset)
    cert = world_2d.certify_point(model, point, noise, 100, N_LARGE, ALPHA, seed=0)
    p_exact = norm.cdf(mahalanobis / SIGMA)
    assert cert.prediction == 1 and cert.metric == "mahalanobis"
    assert cert.radius == pytest.approx(SIGMA * norm.ppf(cert.p_lower), rel=1e-12)
    assert _lowest_radius(noise, p_exact, N_LARGE) <= cert.radius <= mahalanobis


def test_laplace_radius_formula_is_the_closed_form_and_its_certificate_the_l1_distance() -> None:
    noise = Laplace.from_sigma(SIGMA)
    lam = SIGMA / math.sqrt(2)
    threshold, gap = 0.45, 0.09
    p_exact = 1 - math.exp(-gap / lam) / 2  # P(x_0 + e > t) for Laplace e of scale lam
    assert noise.radius(p_exact) == pytest.approx(gap, rel=1e-12)  # -lam ln(2 (1 - p)) at the known p
    model = world_2d.linear_classifier((1.0, 0.0), threshold)
    point = (threshold + gap, 0.3)
    cert = world_2d.certify_point(model, point, noise, 100, N_LARGE, ALPHA, seed=0)
    assert cert.prediction == 1 and cert.metric == "l1"
    assert cert.radius == pytest.approx(-lam * math.log(2 * (1 - cert.p_lower)), rel=1e-12)
    assert _lowest_radius(noise, p_exact, N_LARGE) <= cert.radius <= gap


def test_laplace_certificate_of_an_oblique_line_stays_inside_its_l1_distance() -> None:
    normal, offset = _line(50.0, 0.5)
    point = _point_at(normal, offset, (0.5, 0.5), 0.06)
    l1_distance = 0.06 / np.abs(normal).max()  # the dual norm of l1 is l_inf
    cert = world_2d.certify_point(
        world_2d.linear_classifier(tuple(normal), offset), point, Laplace.from_sigma(SIGMA), 100, 20_000, ALPHA, 0
    )
    assert 0 < cert.radius <= l1_distance


# ----------------------------------------------------------------------------- drawn shapes
def test_drawn_shapes_lie_at_the_certified_radius_in_each_metric() -> None:
    radius, point = 0.137, (0.4, 0.55)
    centre = np.asarray(point)
    disc = world_2d.outline(IsotropicGaussian(SIGMA), radius, point) - centre
    np.testing.assert_allclose(np.linalg.norm(disc, axis=1), radius, rtol=1e-12)

    diamond = world_2d.outline(Laplace.from_sigma(SIGMA), radius, point, corners=360) - centre
    np.testing.assert_allclose(np.abs(diamond).sum(axis=1), radius, rtol=1e-12)
    vertices = diamond[[0, 90, 180, 270]]
    np.testing.assert_allclose(vertices, [[radius, 0], [0, radius], [-radius, 0], [0, -radius]], atol=1e-12)

    ellipse = world_2d.outline(AnisotropicGaussian(SIGMA, world_2d.ellipse_covariance(ANGLE, RATIO)), radius, point)
    st_inv = np.linalg.inv(_st_dense(ANGLE, RATIO))
    np.testing.assert_allclose(np.sqrt(np.einsum("bi,ij,bj->b", ellipse - centre, st_inv, ellipse - centre)), radius)
    # its semi-axes are R sqrt(mu): R sqrt(ratio) along the long axis (det St = 1)
    assert np.linalg.norm(ellipse - centre, axis=1).max() == pytest.approx(radius * math.sqrt(RATIO), rel=1e-3)


def test_nearest_other_class_cell_is_the_distance_to_the_line_up_to_the_grid() -> None:
    normal, offset = _line(20.0, 0.6)
    model = world_2d.linear_classifier(tuple(normal), offset)
    grid = world_2d.Grid(60)
    point = _point_at(normal, offset, (0.5, 0.5), 0.12)
    nearest = world_2d.nearest_other_class(IsotropicGaussian(SIGMA), point, 1, world_2d.base_regions(model, grid), grid)
    assert nearest is not None
    assert normal @ np.asarray(nearest.point) <= offset
    assert 0.12 <= nearest.distance <= 0.12 + grid.spacing * math.sqrt(2)


# ----------------------------------------------------------------------------- data, classifier, fitted covariance
def test_world_is_seeded_inside_the_square_and_learns_its_data() -> None:
    for dataset in world_2d.DATASETS:
        points, labels = world_2d.make_points(dataset, 200, seed=4)
        again, _ = world_2d.make_points(dataset, 200, seed=4)
        assert np.array_equal(points, again) and points.min() >= 0.1 and points.max() <= 0.9
        model = world_2d.train_classifier(points, labels, "small MLP", seed=4)
        twin = world_2d.train_classifier(points, labels, "small MLP", seed=4)
        assert all(
            torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values(), strict=True)
        )
        predicted = model(torch.from_numpy(points).reshape(-1, *world_2d.SHAPE)).argmax(dim=1).numpy()
        assert (predicted == labels).mean() > 0.9


def test_fitted_covariance_comes_from_the_attack() -> None:
    points, labels = world_2d.make_points("two moons", 200, seed=0)
    mlp = world_2d.train_classifier(points, labels, "small MLP", seed=0)
    perturbations = world_2d.attack_perturbations(mlp, points, labels, 0.1)
    assert perturbations.shape[1:] == world_2d.SHAPE
    # the points lie in [0.1, 0.9]^2, so no step of 0.1 is clipped: every perturbation has l2 norm 0.1
    norms = perturbations.flatten(1).norm(dim=1)
    assert len(norms) == 200 and torch.allclose(norms, torch.full_like(norms, 0.1), atol=1e-5)
    cov = world_2d.fitted_covariance(perturbations)
    assert cov.shape == world_2d.SHAPE and cov.k == 1 and cov.mu_max >= cov.mu_min
    # a linear model's steps are +-eps along its one gradient direction: St stretches along it
    linear = world_2d.train_classifier(points, labels, "linear", seed=0)
    with pytest.warns(UserWarning, match="floored"):
        thin = world_2d.fitted_covariance(world_2d.attack_perturbations(linear, points, labels, 0.1))
    weight = linear.body[0].weight.detach().double()
    normal = (weight[1] - weight[0]) / (weight[1] - weight[0]).norm()
    assert abs(float(thin.eigenvectors[:, 0] @ normal)) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="identical"):
        world_2d.fitted_covariance(perturbations[:1].expand(5, *world_2d.SHAPE).clone())


def test_a_click_sets_the_point_inside_the_square(monkeypatch: pytest.MonkeyPatch) -> None:
    event = types.SimpleNamespace(selection=types.SimpleNamespace(points=[{"x": 0.25, "y": 1.02}]))
    session = {"world_chart_lsmooth": event}
    monkeypatch.setattr(world_2d_view.st, "session_state", session)
    world_2d_view.take_click("world_chart_lsmooth")
    assert (session["world_u"], session["world_v"]) == (0.25, 1.0)


# ----------------------------------------------------------------------------- the page
def test_page_shows_three_certificates_with_their_metrics_and_follows_the_point(app_env: Path) -> None:
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.run()
    at.switch_page(PAGE)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.number_input(key="world_u").set_value(0.5)
    at.number_input(key="world_v").set_value(0.2)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert list(metrics) == [
        "RandSmooth radius (l2)",
        "LSmooth radius (l1)",
        "DSmooth radius (Mahalanobis (St))",
    ]
    # the page's numbers are the library's: the same world, noises and certify give the same radii
    current = world_2d_view.world(world_2d.DATASETS[0], world_2d.CLASSIFIERS[0], 0)
    noises = world_2d.noises(
        world_2d_view.DEFAULT_SIGMA,
        world_2d.ellipse_covariance(world_2d_view.DEFAULT_ANGLE, world_2d_view.DEFAULT_RATIO),
    )
    for noise, shown in zip(noises, metrics.values(), strict=True):
        cert = world_2d.certify_point(current.model, (0.5, 0.2), noise, world_2d_view.N0, 10_000, 0.001, 0)
        assert shown == ("abstains" if cert.abstained else f"{cert.radius:.4f}")
    captions = " ".join(c.value for c in at.caption)
    assert "(l2)" in captions and "(l1)" in captions and "(Mahalanobis (St))" in captions
    charts = [element.proto.id for element in at.get("plotly_chart")]
    assert len(charts) == 4 and all(any(key in c for c in charts) for key in world_2d_view.CHART_KEYS)

    at.radio(key="world_cov_mode").set_value(world_2d_view.FIT_MODE).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(c.value.startswith("Fitted by the core to 200 FGSM perturbations") for c in at.caption)
    assert [m.label for m in at.metric][2] == "DSmooth radius (Mahalanobis (St))"


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium at /usr/bin/chromium")
def test_a_click_on_the_base_chart_certifies_that_point_in_a_real_browser(app_server: str) -> None:  # noqa: F811
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2200})
            page.set_default_timeout(120_000)
            page.goto(app_server)
            page.get_by_role("heading", level=1).first.wait_for()
            wait_idle(page)
            page.get_by_role("link", name="2-D world", exact=True).first.click()
            page.get_by_role("heading", level=1).filter(has_text="2-D world").wait_for()
            wait_idle(page)
            before = page.locator('[data-testid="stMetric"]').all_inner_texts()
            plot = page.locator('[data-testid="stPlotlyChart"]').first.locator(".nsewdrag").first.bounding_box()
            page.mouse.click(plot["x"] + 0.7 * plot["width"], plot["y"] + 0.6 * plot["height"])  # (0.7, 0.4)
            wait_idle(page)
            u, v = (float(page.get_by_label(name, exact=True).input_value()) for name in ("u", "v"))
            # the nearest click target (0.04 apart) to the click
            assert abs(u - 0.7) <= 0.04 and abs(v - 0.4) <= 0.04, (u, v)
            after = page.locator('[data-testid="stMetric"]').all_inner_texts()
            assert len(after) == 3 and after != before
            for metric, text in zip(("(l2)", "(l1)", "(Mahalanobis (St))"), after, strict=True):
                assert metric in text, after
        finally:
            browser.close()
