"""How long the 2-D world page takes to redraw after each kind of change (target: under 0.5 s on 2 cores).

Two measurements. First the page's work piece by piece, in this process with one torch thread (the
app's rule for a page's own work, ``dsmooth_lab_ui.threads``): training, the region maps, the three
certificates, the shapes and the figures serialised to JSON, summed for each kind of change (a new
point, sigma, ellipse, fitted covariance, data set). Then the whole app (``app.py`` with the page) under
``streamlit.testing.v1.AppTest``: the server-side time of the rerun after each change, which includes
app.py's sidebar and job panel but not the browser's drawing. Each change uses fresh values, so no
cache answers it. Timings on a shared machine are noisy: the load average is recorded.
Run: ``PYTHONPATH=. .venv/bin/python benchmarks/bench_world.py`` (CIFAR-10 in ``DSMOOTH_DATA_DIR``
makes the app start as it does for users; without it the app starts without an image).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from bench_results import add_results_option, write_result

from dsmooth_lab_ui import world_2d, world_2d_figures, world_2d_view

ROOT = Path(__file__).resolve().parents[1]
TARGET_S = 0.5
N, ALPHA, SEED = 10_000, 0.001, 0


def _seconds(work: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``work`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _figures(current: world_2d_view.World, noises, point, shares, base, certs) -> None:
    """The four figures as the page builds them, serialised as Streamlit does."""
    grid = world_2d.Grid(world_2d_view.GRID_SIZE)
    fig = world_2d_figures.region_chart("base", grid, base)
    world_2d_figures.add_data(fig, current.points, current.labels)
    world_2d_figures.add_point(fig, point)
    fig.to_json()
    for noise, share, cert in zip(noises, shares, certs, strict=True):
        shape = world_2d_view.shape_of(noise, cert, point, share, grid)
        fig = world_2d_figures.region_chart(noise.name, grid, share)
        world_2d_figures.add_point(fig, point)
        world_2d_figures.add_certificate(fig, point, shape)
        fig.to_json()


def pieces(repeats: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Each piece of the page's work, and the sum each kind of change pays."""
    torch.set_num_threads(1)
    size, draws = world_2d_view.GRID_SIZE, world_2d_view.GRID_DRAWS
    grid = world_2d.Grid(size)
    points, labels = world_2d.make_points("two moons", world_2d_view.DATA_POINTS, 0)
    world_2d.train_classifier(points, labels, "small MLP", 1)  # torch's one-time warm-up is not a redraw
    model = world_2d.train_classifier(points, labels, "small MLP", 0)
    current = world_2d_view.World(("two moons", "small MLP", 0), points, labels, model)
    noises = world_2d.noises(0.08, world_2d.ellipse_covariance(45, 3))
    point = (0.3, 0.7)
    base = world_2d.base_regions(model, grid)
    shares = [world_2d.smoothed_shares(model, grid, noise, draws, SEED) for noise in noises]
    certs = [world_2d.certify_point(model, point, noise, world_2d_view.N0, N, ALPHA, SEED) for noise in noises]
    cloud = world_2d.attack_perturbations(model, points, labels, 0.1)
    t = {
        "train MLP": _seconds(lambda: world_2d.train_classifier(points, labels, "small MLP", 0), repeats),
        "make data": _seconds(lambda: world_2d.make_points("two moons", world_2d_view.DATA_POINTS, 0), repeats),
        "base map": _seconds(lambda: world_2d.base_regions(model, grid), repeats),
        **{
            f"{noise.name} map": _seconds(
                lambda n=noise: world_2d.smoothed_shares(model, grid, n, draws, SEED), repeats
            )
            for noise in noises
        },
        **{
            f"{noise.name} certificate": _seconds(
                lambda n=noise: world_2d.certify_point(model, point, n, world_2d_view.N0, N, ALPHA, SEED), repeats
            )
            for noise in noises
        },
        "FGSM + covariance fit": _seconds(
            lambda: world_2d.fitted_covariance(world_2d.attack_perturbations(model, points, labels, 0.1)), repeats
        ),
        "shapes + 4 figures to JSON": _seconds(lambda: _figures(current, noises, point, shares, base, certs), repeats),
    }
    del cloud
    maps = sum(t[f"{noise.name} map"] for noise in noises)
    certificates = sum(t[f"{noise.name} certificate"] for noise in noises)
    figures = t["shapes + 4 figures to JSON"]
    changes = {
        "point": certificates + figures,
        "sigma": maps + certificates + figures,
        "ellipse (angle or ratio)": t["DSmooth map"] + t["DSmooth certificate"] + figures,
        "fitted covariance (eps2)": t["FGSM + covariance fit"] + t["DSmooth map"] + t["DSmooth certificate"] + figures,
        "data set or seed": t["make data"] + t["train MLP"] + t["base map"] + maps + certificates + figures,
    }
    piece_rows = [{"piece": name, "median ms": round(1000 * s, 1)} for name, s in t.items()]
    change_rows = [{"change": name, "sum of pieces ms": round(1000 * s, 1)} for name, s in changes.items()]
    return piece_rows, change_rows


def app_reruns(repeats: int) -> list[dict[str, object]]:
    """Server-side rerun time of app.py on the world page after each kind of change (AppTest)."""
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.testing.v1 import AppTest

    original = PagesManager.__init__

    def with_navigation(self, *args, **kwargs) -> None:  # as tests/conftest.py: the live app's page mode
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    PagesManager.__init__ = with_navigation
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    at.switch_page("pages/world_2d.py")
    at.run()
    at.radio(key="world_cov_mode").set_value(world_2d_view.FIT_MODE).run()  # FGSM's first call warms autograd
    at.radio(key="world_cov_mode").set_value(world_2d_view.DRAW_MODE).run()
    rng = np.random.default_rng(0)
    fresh = iter(range(1, 10_000))

    def point() -> None:
        at.number_input(key="world_u").set_value(round(float(rng.uniform(0.1, 0.9)), 3))

    def sigma() -> None:
        at.slider(key="world_sigma").set_value(round(0.04 + 0.01 * (next(fresh) % 20), 2))

    def angle() -> None:
        at.slider(key="world_angle").set_value(-90 + 5 * (next(fresh) % 36))

    def seed() -> None:
        at.number_input(key="world_seed").set_value(next(fresh))

    rows = []
    for name, change in (("point", point), ("sigma", sigma), ("ellipse angle", angle), ("data seed", seed)):
        times = []
        for _ in range(repeats):
            change()
            start = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - start)
            assert not at.exception, [e.value for e in at.exception]
        median = statistics.median(times)
        rows.append(
            {
                "change": name,
                "median ms": round(1000 * median, 1),
                "max ms": round(1000 * max(times), 1),
                "runs": repeats,
                f"median < {TARGET_S} s": median < TARGET_S,
            }
        )
    PagesManager.__init__ = original
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per piece and per change")
    add_results_option(parser)
    args = parser.parse_args()
    piece_rows, change_rows = pieces(args.repeats)
    rerun_rows = app_reruns(args.repeats)
    for title, rows in (("pieces", piece_rows), ("changes", change_rows), ("app reruns", rerun_rows)):
        print(title)
        for row in rows:
            print("  ", row)
    settings = {
        "grid": f"{world_2d_view.GRID_SIZE} x {world_2d_view.GRID_SIZE}",
        "draws per cell": world_2d_view.GRID_DRAWS,
        "n0": world_2d_view.N0,
        "n": N,
        "data points": world_2d_view.DATA_POINTS,
        "torch threads (pieces)": 1,
        "repeats": args.repeats,
    }
    write_result(
        args.results,
        "bench_world",
        settings,
        {
            "Pieces of the page's work (median)": piece_rows,
            "What each change pays (sum of its pieces)": change_rows,
            "The app's rerun after a change (AppTest, server side)": rerun_rows,
        },
        notes=[
            "The browser's drawing of the four charts is not included; the AppTest rerun includes app.py's "
            "sidebar and job panel.",
        ],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
