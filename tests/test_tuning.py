"""Tuning DSmooth's knobs on held-out images: a toy problem whose best setting is known in closed form."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from dsmooth_core import LowRankCovariance, tuning
from dsmooth_core.cli import main
from dsmooth_core.settings import ProfileShape
from dsmooth_core.tuning import (
    TuningGrid,
    axis_ratio,
    choices_markdown,
    floor_shrinkage,
    read_tuning_record,
    split_calibration,
    tune_covariance,
    tuning_markdown,
    write_tuning_record,
)
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
    grid = TuningGrid(
        normalizations=("det", "trace"),
        ranks=(4,),
        shrinkages=(0.0, 0.5, 0.9),
        min_axis_ratio=2.0,
        shrink_to_floor=False,
    )
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
    grid = TuningGrid(
        normalizations=("trace",), ranks=(4,), shrinkages=(1.0,), min_axis_ratio=2.0, shrink_to_floor=False
    )
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


def _along_the_threat(fitted: LowRankCovariance, margins: np.ndarray) -> tuple[LinearClassifier, torch.Tensor]:
    """A linear f whose normal is the top threat direction, and images at ``margins`` from its boundary.

    Noise along that direction shrinks as St grows isotropic, so without the rule the most shrunk
    setting certifies the most: the case the axis-ratio floor exists for.
    """
    w = fitted.eigenvectors[:, 0]
    x0 = torch.full(SHAPE, 0.5, dtype=torch.float64)
    images = torch.stack([x0 + float(m) * w.reshape(SHAPE) for m in margins]).float()
    return LinearClassifier(w.reshape(SHAPE), float((w * x0.flatten()).sum())), images


def test_floor_shrinkage_is_the_closed_form_edge_rounded_down_to_two_digits_from_isotropy(fitted):
    edge = floor_shrinkage(fitted, 2.0)
    assert edge is not None and 0 < edge < 1 and axis_ratio(fitted.with_shrinkage(edge)) >= 2.0
    # the closed form of docs/MATH.md section 3: ratio^2 = ((1-g) l1 + g t) / ((1-g) rho^2 + g t)
    l1, rho2, t, r2 = float(fitted.base_eigenvalues[0]), fitted.base_residual, fitted.isotropic_variance, 4.0
    exact = (l1 - r2 * rho2) / (l1 - r2 * rho2 + (r2 - 1) * t)
    assert edge <= exact < edge + (1 - edge) / 10 and axis_ratio(fitted.with_shrinkage(exact + 1e-6)) < 2.0
    assert len(f"{1 - edge:.12g}".lstrip("0.")) <= 2  # two significant digits from isotropy
    assert floor_shrinkage(fitted, axis_ratio(fitted) * 1.01) is None  # no shrinkage reaches it
    assert floor_shrinkage(fitted, 1.0) is None  # a floor of 1 excludes nothing
    assert floor_shrinkage(fitted.with_rank(1), 2.0) != edge  # the residual, hence the edge, depends on k
    steep = floor_shrinkage(fitted, 1.01)  # a floor close to 1 lies beyond 0.999: still found, still below it
    assert steep is not None and 0.999 < steep < 1 and axis_ratio(fitted.with_shrinkage(steep)) >= 1.01


def test_the_grid_adds_one_floor_setting_per_normalization_and_rank(fitted):
    grid = TuningGrid(normalizations=("det", "trace"), ranks=(9, 4, 1), shrinkages=(0.9, 0.0, 0.97))
    shapes = grid.settings(fitted)
    assert [(s.normalization, s.k) for s in shapes[::4]] == [("det", 4), ("det", 1), ("trace", 4), ("trace", 1)]
    for normalization, k in [("det", 4), ("det", 1), ("trace", 4), ("trace", 1)]:
        edge = floor_shrinkage(fitted.with_rank(k), 2.0)
        expected = sorted({0.0, 0.9, 0.97, edge})
        assert [s.shrinkage for s in shapes if (s.normalization, s.k) == (normalization, k)] == expected
    assert len(shapes) == 16 and grid.most_settings == 24  # rank 9 clamps to the fit's 4
    assert len(dataclasses.replace(grid, shrink_to_floor=False).settings(fitted)) == 12


def test_the_rule_binds_excluded_settings_are_never_chosen_even_when_they_certify_more(fitted):
    shrinkages = (0.0, 0.5, 0.9, 0.95, 0.99)
    free = TuningGrid(normalizations=("det",), ranks=(4,), shrinkages=shrinkages, min_axis_ratio=1.0)
    ruled = dataclasses.replace(free, min_axis_ratio=2.0)
    top = fitted.eigenvectors[:, 0].numpy()
    spread = float(top @ dense_normalized(ProfileShape("det", 4, 0.99).apply(fitted)) @ top)  # w^T St w
    model, images = _along_the_threat(fitted, SIGMA * np.sqrt(spread) * np.linspace(0.05, 0.6, 24))
    common = dict(sigma=SIGMA, n0=50, n=400, alpha=0.01, seed=7)
    without = tune_covariance(model, fitted, images, [1] * len(images), grid=free, **common)
    with_rule = tune_covariance(model, fitted, images, [1] * len(images), grid=ruled, **common)

    assert without.choice.axis_ratio < 2.0  # left alone, tuning walks toward isotropic noise
    choice = with_rule.choice
    assert choice.eligible and choice.axis_ratio >= 2.0 and choice.certified < without.choice.certified
    excluded = [row for row in with_rule.rows if not row.eligible]
    assert [row.shrinkage for row in excluded] == [0.95, 0.99]
    assert all(row.certified is None and row.abstained is None and row.axis_ratio < 2.0 for row in excluded)
    scores = {row.shrinkage: row.certified for row in without.rows}  # common random numbers: same counts
    assert all(
        scores[row.shrinkage] == row.certified for row in with_rule.rows if row.eligible and row.shrinkage in scores
    )
    assert choice.certified == max(row.certified for row in with_rule.rows if row.eligible)
    edge = floor_shrinkage(fitted, 2.0)
    assert [row.shrinkage for row in with_rule.rows] == [0.0, 0.5, 0.9, edge, 0.95, 0.99]


def _always_one() -> LinearClassifier:
    """f(x) = 1 everywhere: every setting certifies every image with label 1, so all settings tie."""
    return LinearClassifier(torch.zeros(SHAPE), -1.0)


def test_excluded_settings_cost_no_certificates(fitted, monkeypatch):
    calls, steps = [], []
    real_certify = tuning.certify

    def counting(model, x, noise, *args, **kwargs):
        calls.append(axis_ratio(noise.covariance))
        return real_certify(model, x, noise, *args, **kwargs)

    monkeypatch.setattr(tuning, "certify", counting)
    grid = TuningGrid(normalizations=("det", "trace"), ranks=(4, 1), shrinkages=(0.0, 0.97, 0.99))
    images = torch.full((3, *SHAPE), 0.5)
    result = tune_covariance(
        _always_one(),
        fitted,
        images,
        [1, 1, 1],
        sigma=SIGMA,
        grid=grid,
        n0=5,
        n=10,
        seed=0,
        progress=lambda done, total: steps.append((done, total)),
    )
    eligible = [row for row in result.rows if row.eligible]
    assert len(eligible) < len(result.rows)  # the floor bites on this grid
    assert len(calls) == len(eligible) * len(images) and min(calls) >= 2.0
    assert steps[-1] == (len(calls), len(calls))  # progress counts only the certificates made


def test_ties_go_to_the_first_eligible_setting_in_grid_order(fitted):
    images = torch.full((2, *SHAPE), 0.5)
    for normalizations, prune in [(("det", "trace"), False), (("trace", "det"), False), (("det", "trace"), True)]:
        grid = TuningGrid(normalizations=normalizations, ranks=(1, 4), shrinkages=(0.99, 0.0, 0.5))
        result = tune_covariance(
            _always_one(), fitted, images, [1, 1], sigma=SIGMA, grid=grid, n0=5, n=10, seed=0, prune=prune
        )
        assert all(row.certified == 2 for row in result.rows if row.eligible)
        assert result.choice == result.rows[0]
        assert (result.choice.normalization, result.choice.k, result.choice.shrinkage) == (normalizations[0], 4, 0.0)


def _record(fitted) -> dict:
    grid = TuningGrid(normalizations=("det", "trace"), ranks=(4,), shrinkages=(0.0, 0.97))
    images = torch.full((2, *SHAPE), 0.5)
    result = tune_covariance(_always_one(), fitted, images, [1, 1], sigma=SIGMA, grid=grid, n0=5, n=10, seed=0)
    return {"fitting_indices": [3, 4, 5], "tuning_indices": [1, 2], **result.to_dict()}


def test_the_tuning_table_file_round_trips_and_renders_every_row(fitted, tmp_path):
    record = _record(fitted)
    write_tuning_record(record, tmp_path / "table.json")
    back = read_tuning_record(tmp_path / "table.json")
    assert back == record and back["grid"]["min_axis_ratio"] == 2.0
    table = tuning_markdown(back).splitlines()
    assert len(table) == 2 + len(record["table"])
    for line, row in zip(table[2:], record["table"], strict=True):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert cells[:4] == [row["normalization"], str(row["k"]), f"{row['shrinkage']:g}", f"{row['axis_ratio']:.3g}"]
        if row["eligible"]:
            assert cells[4:6] == [f"{row['certified']} / {row['images']}", str(row["abstained"])]
        else:
            assert cells[4:] == ["not certified", "", "excluded (axis ratio below 2)"]
    assert sum(line.endswith("| chosen |") for line in table) == 1 and "| det | 4 | 0 |" in table[2]
    summary = choices_markdown([("toy", back)], paper=("det", 4, 0.0)).splitlines()
    excluded = sum(not row["eligible"] for row in record["table"])
    assert summary[2] == (
        f"| toy | 0.5 | det, 4, 0; {record['choice']['axis_ratio']:.3g} | 2 / 2 | 2 / 2 | {excluded} / 6 |"
    )


def test_tuning_table_files_are_refused_with_a_reason(fitted, tmp_path):
    with pytest.raises(ValueError, match=r"ending in \.json"):
        write_tuning_record(_record(fitted), tmp_path / "table.csv")
    (tmp_path / "other.json").write_text('{"sigma": 0.25}')
    with pytest.raises(ValueError, match="no tuning record"):
        read_tuning_record(tmp_path / "other.json")


def test_the_committed_grid_ratios_and_the_math_page_match_the_bundled_profiles():
    """docs/reproduction/tuning_grid/ratios.csv is what its script computes, and MATH.md quotes it."""
    folder = Path(__file__).resolve().parents[1] / "docs" / "reproduction" / "tuning_grid"
    spec = importlib.util.spec_from_file_location("tuning_grid_ratios", folder / "ratios.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    with (folder / "ratios.csv").open() as handle:
        committed = list(csv.DictReader(handle))
    assert committed == [{key: str(value) for key, value in row.items()} for row in script.rows()]

    def ratios(shrinkage: str) -> str:
        values = [float(row["axis_ratio"]) for row in committed if row["shrinkage"] == shrinkage]
        return f"{min(values):.2f}-{max(values):.2f}"

    floors = [row for row in committed if row["shrinkage"] not in ("0", "0.9", "0.97")]
    assert all(row["eligible"] == "True" for row in floors)
    floor_span = f"{min(float(r['shrinkage']) for r in floors):g}-{max(float(r['shrinkage']) for r in floors):g}"
    math_page = " ".join((folder.parents[2] / "docs" / "MATH.md").read_text().split())
    assert f"ratio at `gamma = 0.9` is {ratios('0.9')}" in math_page
    assert f"the floor lies at `gamma` {floor_span}" in math_page
    assert f"`gamma = 0.97` falls to {ratios('0.97')}" in math_page
    assert all(row["eligible"] == "False" for row in committed if row["shrinkage"] == "0.97")


@pytest.mark.parametrize("along_the_threat", [True, False])
def test_pruning_keeps_the_choice_for_fewer_certificates(fitted, monkeypatch, along_the_threat):
    calls = []
    real_certify = tuning.certify
    monkeypatch.setattr(tuning, "certify", lambda *args, **kwargs: calls.append(1) or real_certify(*args, **kwargs))
    if along_the_threat:  # the most shrunk eligible setting leads
        model, images = _along_the_threat(fitted, SIGMA * np.linspace(0.05, 1.2, 16))
    else:  # noise across the boundary is the residual's: the least shrunk setting leads, certified last
        w = _boundary_normal(fitted)
        x0 = torch.full(SHAPE, 0.5, dtype=torch.float64)
        images = torch.stack([x0 + float(m) * w.reshape(SHAPE) for m in SIGMA * np.linspace(0.02, 0.6, 16)]).float()
        model = LinearClassifier(w.reshape(SHAPE), float((w * x0.flatten()).sum()))
    grid = TuningGrid(normalizations=("det", "trace"), ranks=(4, 1), shrinkages=(0.0, 0.5, 0.9, 0.97))
    common = dict(sigma=SIGMA, grid=grid, n0=20, n=100, alpha=0.01, seed=2)
    full = tune_covariance(model, fitted, images, [1] * len(images), **common)
    full_calls = len(calls)
    pruned = tune_covariance(model, fitted, images, [1] * len(images), prune=True, **common)
    assert pruned.choice == full.choice and not pruned.choice.stopped
    assert len(calls) - full_calls == sum(row.evaluated for row in pruned.rows) < full_calls
    stopped = [row for row in pruned.rows if row.stopped]
    assert stopped
    for row, reference in zip(pruned.rows, full.rows, strict=True):
        if row.eligible and not row.stopped:
            assert row == reference  # common random numbers: a setting certified in full scores the same
        if row.stopped:  # even certifying every image it skipped, it would not have won
            assert row.certified + row.images - row.evaluated <= pruned.choice.certified
            assert reference.certified <= pruned.choice.certified
    record = pruned.to_dict()
    lines = tuning_markdown(record).splitlines()[2:]
    for line, row in zip(lines, record["table"], strict=True):
        if row["eligible"] and row["evaluated"] < row["images"]:
            assert f"| {row['certified']} of the first {row['evaluated']} (stopped: cannot win) |" in line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tuning-table", "t.json"], "give --tune-sigma too"),
        (["--tune-sigma", "0.25", "--tuning-table", "t.csv"], "ending in .json"),
        (["--tune-sigma", "0.25", "--tune-n0", "0"], "at least 1 each"),
    ],
)
def test_profile_refuses_a_bad_tuning_request_before_attacking(extra, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["profile", "--model", "cifar10_resnet20", "--untrained", "--device", "cpu", *extra])
    assert stop.value.code != 0
    assert message in capsys.readouterr().err and not any(tmp_path.iterdir())
