"""The 2-D world page's widgets, caches and layout; the computations are in ``world_2d``.

Each cache is keyed by the few values that decide its result (data set, classifier, seed, a noise's
identity, the point), so a change recomputes only what it touches: a new point costs three
certificates, a new sigma three region maps, a new data set one training run as well.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import streamlit as st
import torch

from dsmooth_core.certify import Certificate
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.noise import SmoothingNoise
from dsmooth_lab_ui import world_2d, world_2d_figures

# Chosen with benchmarks/bench_world.py so that every change redraws in under 0.5 s on 2 cores: at 60 x 60
# cells and 64 draws a new data set or seed took 0.76 s in Chromium, the three region maps (28 ms of CPU each,
# 230,000 model calls) its largest piece after the training; 50 x 50 and 48 draws cost 12 ms each. The price:
# the estimated tie line is a little rougher where P(class 1) stays near 1/2 over a wide area (large sigma).
GRID_SIZE = 50
GRID_DRAWS = 48
DATA_POINTS = 200
N0 = 100
DRAW_MODE = "Draw the ellipse"
FIT_MODE = "Fit it to an attack (FGSM l2)"
COVARIANCE_MODES = (DRAW_MODE, FIT_MODE)
ALPHAS = (0.001, 0.01, 0.05)
DEFAULT_SIGMA, DEFAULT_ANGLE, DEFAULT_RATIO = 0.08, 90, 3.0  # chosen so the three regions differ at the default point
POINT_KEYS = ("world_u", "world_v")
SHAPE_NAMES = {"randsmooth": "disc (l2 ball)", "lsmooth": "diamond (l1 ball)", "dsmooth": "ellipse (Mahalanobis ball)"}
NOISE_NAMES = {"randsmooth": "N(0, sigma^2 I)", "lsmooth": "Laplace noise", "dsmooth": "N(0, sigma^2 St)"}
CHART_KEYS = ("world_chart_base", "world_chart_randsmooth", "world_chart_lsmooth", "world_chart_dsmooth")


@dataclass(frozen=True)
class World:
    """A data set and the base classifier trained on it."""

    key: tuple[str, str, int]  # (data set, classifier, seed)
    points: np.ndarray
    labels: np.ndarray
    model: torch.nn.Module


@st.cache_resource(max_entries=8, show_spinner=False)
def world(dataset: str, classifier: str, seed: int) -> World:
    points, labels = world_2d.make_points(dataset, DATA_POINTS, seed)
    model = world_2d.train_classifier(points, labels, classifier, seed)
    return World((dataset, classifier, seed), points, labels, model)


@st.cache_data(max_entries=16, show_spinner=False)
def base_regions(_world: World, world_key: tuple[str, str, int], size: int) -> np.ndarray:
    return world_2d.base_regions(_world.model, world_2d.Grid(size))


@st.cache_data(max_entries=48, show_spinner=False)
def smoothed_shares(
    _world: World, world_key: tuple, _noise: SmoothingNoise, noise_id: tuple, size: int, draws: int, seed: int
) -> np.ndarray:
    return world_2d.smoothed_shares(_world.model, world_2d.Grid(size), _noise, draws, seed)


@st.cache_data(max_entries=256, show_spinner=False)
def certificate(
    _world: World,
    world_key: tuple,
    _noise: SmoothingNoise,
    noise_id: tuple,
    point: tuple,
    n: int,
    alpha: float,
    seed: int,
) -> Certificate:
    return world_2d.certify_point(_world.model, point, _noise, N0, n, alpha, seed)


@st.cache_resource(max_entries=16, show_spinner=False)
def attack_cloud(_world: World, world_key: tuple, eps2: float) -> torch.Tensor:
    return world_2d.attack_perturbations(_world.model, _world.points, _world.labels, eps2)


def take_click(chart_key: str) -> None:
    """``on_select`` of the base chart: the clicked position becomes the point (before the number inputs draw)."""
    event = st.session_state.get(chart_key)
    points = event.selection.points if event is not None else []
    if points:
        for key, axis in zip(POINT_KEYS, ("x", "y"), strict=True):
            st.session_state[key] = round(min(1.0, max(0.0, float(points[0][axis]))), 3)


def world_controls() -> World:
    c1, c2, c3 = st.columns(3)
    dataset = c1.selectbox("Data set", world_2d.DATASETS, key="world_dataset")
    classifier = c2.selectbox("Base classifier", world_2d.CLASSIFIERS, key="world_classifier")
    seed = c3.number_input("Data and training seed", min_value=0, max_value=10_000, value=0, key="world_seed")
    return world(dataset, classifier, int(seed))


def covariance_controls(current: World) -> tuple[LowRankCovariance, np.ndarray | None]:
    """DSmooth's covariance, drawn (angle, axis ratio) or fitted by the core to FGSM perturbations.

    Returns the covariance and, when fitted, the perturbations (to show around the chosen point).
    """
    mode = st.radio("DSmooth's covariance", COVARIANCE_MODES, horizontal=True, key="world_cov_mode")
    if mode == DRAW_MODE:
        c1, c2 = st.columns(2)
        angle = c1.slider("Long axis angle (degrees)", -90, 90, DEFAULT_ANGLE, step=5, key="world_angle")
        ratio = c2.slider("Axis ratio (long / short std)", 1.0, 6.0, DEFAULT_RATIO, step=0.25, key="world_ratio")
        return world_2d.ellipse_covariance(float(angle), float(ratio)), None
    eps2 = st.slider("FGSM l2 step eps2", 0.02, 0.3, 0.1, step=0.01, key="world_eps")
    perturbations = attack_cloud(current, current.key, float(eps2))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            covariance = world_2d.fitted_covariance(perturbations)
    except ValueError as exc:
        st.warning(f"The attack's perturbations give no covariance ({exc}); the drawn ellipse is used instead.")
        return world_2d.ellipse_covariance(DEFAULT_ANGLE, DEFAULT_RATIO), None
    long_axis = covariance.eigenvectors[:, 0]
    angle = math.degrees(math.atan2(float(long_axis[1]), float(long_axis[0])))
    notes = "".join(f" Note: {w.message}." for w in caught)
    st.caption(
        f"Fitted by the core to {len(perturbations)} FGSM perturbations: St's long axis at {angle:.0f} degrees, "
        f"axis ratio {math.sqrt(covariance.mu_max / covariance.mu_min):.3g}.{notes}"
    )
    return covariance, perturbations.reshape(-1, 2).numpy()


def point_controls() -> tuple[float, float]:
    st.caption("Click the base classifier's chart to certify that point, or type it:")
    c1, c2 = st.columns(2)
    u = c1.number_input("u", 0.0, 1.0, 0.35, step=0.01, format="%.3f", key=POINT_KEYS[0])
    v = c2.number_input("v", 0.0, 1.0, 0.35, step=0.01, format="%.3f", key=POINT_KEYS[1])
    return float(u), float(v)


def certificate_controls() -> tuple[int, float, int]:
    with st.expander("Certificate settings (Cohen's CERTIFY, n0 = 100)"):
        c1, c2, c3 = st.columns(3)
        n = c1.number_input("n (estimation draws)", 100, 200_000, 10_000, step=1000, key="world_n")
        alpha = c2.selectbox("alpha", ALPHAS, key="world_alpha")
        seed = c3.number_input("Certificate seed", 0, 10_000, 0, key="world_cert_seed")
    return int(n), float(alpha), int(seed)


def shape_of(
    noise: SmoothingNoise, cert: Certificate, point: tuple[float, float], shares: np.ndarray, grid: world_2d.Grid
) -> world_2d_figures.CertificateShape:
    """The certificate's region and the nearest cell where this smoothed classifier votes the other class."""
    if cert.abstained:
        return world_2d_figures.CertificateShape(None, noise.color, "abstains: no certified region", None)
    regions = (shares > 0.5).astype(int)  # the smoothed class; a tie goes to class 0 as argmax does
    nearest = world_2d.nearest_other_class(noise, point, cert.prediction, regions, grid)
    label = f"{SHAPE_NAMES[noise.key]}, R = {cert.radius:.3f} ({noise.metric_label})"
    return world_2d_figures.CertificateShape(world_2d.outline(noise, cert.radius, point), noise.color, label, nearest)


def certificate_summary(noise: SmoothingNoise, cert: Certificate, shape: world_2d_figures.CertificateShape) -> None:
    """One method's numbers: the radius with its metric, and the nearest other-class cell in the same metric."""
    label = f"{noise.name} radius ({noise.metric_label})"
    if cert.abstained:
        st.metric(label, "abstains")
        st.caption(f"p_lower = {cert.p_lower:.4f} <= 1/2: no class is certified.")
        return
    st.metric(label, f"{cert.radius:.4f}")
    nearest = (
        f"nearest cell where this smoothed classifier votes class {1 - cert.prediction}: "
        f"{shape.nearest.distance:.4f} ({noise.metric_label})"
        if shape.nearest is not None
        else "no cell of the other class in the square"
    )
    st.caption(
        f"class {cert.prediction}, p_lower = {cert.p_lower:.4f}, ceiling {cert.radius_ceiling:.3f} at n = {cert.n}; "
        f"{nearest}."
    )


def charts(
    current: World,
    noises: tuple[SmoothingNoise, ...],
    point: tuple[float, float],
    n: int,
    alpha: float,
    seed: int,
    cloud: np.ndarray | None,
) -> None:
    """The three certificates side by side, then the base regions and one chart per method, two by two.

    Each chart is sent as soon as its map is computed, into places laid out first: the browser draws
    one chart while the server computes the next, so the two cores work at once (six new data seeds in
    Chromium on a quiet 2-core machine: 287-398 ms with every chart sent after all the maps, 264-338 ms).
    """
    grid = world_2d.Grid(GRID_SIZE)
    summaries = st.columns(3)
    cells = [*st.columns(2), *st.columns(2)]
    # plotly's own theme: Streamlit's theming of four charts added about 0.1 s to each redraw in Chromium
    options = {"theme": None, "config": {"displayModeBar": False}}
    base = world_2d_figures.region_chart(
        "Base classifier f: click to certify a point", grid, base_regions(current, current.key, GRID_SIZE), True
    )
    world_2d_figures.add_data(base, current.points, current.labels)
    world_2d_figures.add_point(base, point)
    cells[0].plotly_chart(
        base, key=CHART_KEYS[0], on_select=lambda: take_click(CHART_KEYS[0]), selection_mode="points", **options
    )
    for column, cell, noise, chart_key in zip(summaries, cells[1:], noises, CHART_KEYS[1:], strict=True):
        noise_id = noise.identity()
        shares = smoothed_shares(current, current.key, noise, noise_id, GRID_SIZE, GRID_DRAWS, seed)
        cert = certificate(current, current.key, noise, noise_id, point, n, alpha, seed)
        shape = shape_of(noise, cert, point, shares, grid)
        fig = world_2d_figures.region_chart(f"{noise.name}: f smoothed by {NOISE_NAMES[noise.key]}", grid, shares)
        if cloud is not None and noise.key == "dsmooth":
            world_2d_figures.add_cloud(fig, np.asarray(point) + cloud, "FGSM perturbations, moved to the point")
        world_2d_figures.add_point(fig, point)
        world_2d_figures.add_certificate(fig, point, shape)
        with column:
            certificate_summary(noise, cert, shape)
        cell.plotly_chart(fig, key=chart_key, **options)
