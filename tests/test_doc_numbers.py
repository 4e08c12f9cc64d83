"""Every table of the reproduction pages equals what its committed output gives (issue #25, "every number on record").

The outputs are the gzipped experiment records (read with the project's own analysis), the JSON
written by the scripts under docs/reproduction/ and the model cards; nothing here runs a model. A
cell agrees when it is the computed value rounded as the cell shows it ("13%" is 0.125 to 0.135,
"1,550" is 1,549.5 to 1,550.5), so a changed cell fails, and so does a table that lost a row.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import torch

from dsmooth_core.experiments.analysis import (
    attack_table,
    certified_accuracy,
    group_records,
    summary_table,
)
from dsmooth_core.experiments.records import load_records
from dsmooth_core.profiles import ThreatProfile

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REPRO = DOCS / "reproduction"
RECORDS = REPRO / "records"
ANISO = REPRO / "anisotropic"
MODELS = ROOT / "assets" / "models"
NUMBER = re.compile(r"^-?[\d,]*\.?\d+(?:e[+-]?\d+)?$")


# ---------------------------------------------------------------------------------------- the pages


@dataclass(frozen=True)
class Table:
    heading: str  # the nearest heading above the table
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


def _cells(line: str) -> tuple[str, ...]:
    return tuple(cell.strip() for cell in line.strip().strip("|").split("|"))


@cache
def tables(page: str) -> tuple[Table, ...]:
    """Every pipe table of a page, with the heading it sits under."""
    found, heading, block = [], "", []
    for line in [*(DOCS / page).read_text().splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            found.append(Table(heading, _cells(block[0]), tuple(_cells(b) for b in block[2:])))
            block = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return tuple(found)


def table(page: str, heading: str, first_column: str) -> Table:
    """The one table under ``heading`` whose first column is ``first_column``."""
    matches = [t for t in tables(page) if t.heading.startswith(heading) and t.header[0] == first_column]
    assert len(matches) == 1, f"{page}: {len(matches)} tables under {heading!r} start with {first_column!r}"
    return matches[0]


def section(page: str, heading: str) -> str:
    """The text of one section of a page, up to the next heading of its level or above."""
    text = (DOCS / page).read_text()
    start = text.index(heading)
    level = len(heading) - len(heading.lstrip("#"))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, start + len(heading))
    return text[start : end.start() if end else len(text)]


# ------------------------------------------------------------------------------- agreement of a cell


def agrees(shown: str, value: float) -> bool:
    """Whether ``shown`` ("13%", "0.0693", "1,550", "1.13e+03", "3.09 s", "39 sigma") is ``value`` rounded
    to the digits it shows; a percentage is compared with 100 x value."""
    text = shown.strip().removesuffix(" sigma").removesuffix(" s").replace(",", "")
    if text.endswith("%"):
        text, value = text[:-1], 100 * value
    if not NUMBER.match(text):
        raise AssertionError(f"not a number: {shown!r}")
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (int(exponent or 0) - decimals)
    return abs(float(text) - value) <= unit / 2 * (1 + 1e-9)


def check(shown: str, value: float, where: str) -> None:
    assert agrees(shown, value), f"{where}: the page says {shown}, the committed output gives {value:.6g}"


@pytest.mark.parametrize(
    ("shown", "value", "expected"),
    [
        ("13%", 0.13, True),
        ("13%", 0.14, False),
        ("0.0693", 0.06928, True),
        ("0.0693", 0.0694, False),
        ("1,550", 1549.72, True),
        ("1,550", 1551.0, False),
        ("1.13e+03", 1134.3, True),
        ("1.14e+03", 1134.3, False),
        ("3.09 s", 3.0859, True),
        ("39 sigma", math.sqrt(1549.7), True),
        ("72.5%", 0.725, True),
    ],
)
def test_a_cell_agrees_only_with_its_own_rounding(shown: str, value: float, expected: bool) -> None:
    assert agrees(shown, value) is expected


# ------------------------------------------------------------------------------------- the outputs


@cache
def records(*names: str) -> tuple[dict, ...]:
    return tuple(load_records([RECORDS / f"{name}.jsonl.gz" for name in names]))


@cache
def groups(*names: str) -> tuple:
    return tuple(group_records(records(*names)))


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def _by_method_sigma(names: tuple[str, ...]) -> dict[tuple[str, float], dict]:
    gs = groups(*names)
    return {(g.config["method"], g.config["sigma"]): row for g, row in zip(gs, summary_table(gs), strict=True)}


METHOD_KEYS = {"DSmooth": "dsmooth", "RandSmooth": "randsmooth", "LSmooth": "lsmooth"}


def _method(label: str) -> str:
    """ "DSmooth (mahalanobis)" -> "dsmooth"."""
    return METHOD_KEYS[label.split(" (")[0]]


# ------------------------------------------------------------------- the paper's evaluation (study 1)

SUMMARY_HEADINGS = {"bundled": "Bundled model", "recipe": "Model prepared as the paper did"}


@pytest.mark.parametrize("model", sorted(SUMMARY_HEADINGS))
def test_summary_tables_are_the_records(model: str) -> None:
    t = table("REPRODUCTION.md", SUMMARY_HEADINGS[model], "threat")
    seen = set()
    for threat, method, sigma, *cells in t.rows:
        summaries = _by_method_sigma((f"{model}_{threat}",))
        row = summaries[(_method(method), float(sigma))]
        assert method == f"{row['method']} ({row['metric']})"
        where = f"{model} {threat} {method} sigma {sigma}"
        fields = (
            "accuracy",
            "abstain_rate",
            "median_certified_radius",
            "median_l2_inscribed",
            "certified_against_attack",
            "median_perturbation",
            "mean_seconds",
        )
        for shown, name in zip(cells, fields, strict=True):
            check(shown, row[name], f"{where}, {name}")
        seen.add((threat, method, sigma))
    assert len(seen) == 12, "every threat, method and sigma once"


def test_certified_accuracy_at_fixed_radii_is_the_records() -> None:
    t = table("REPRODUCTION.md", "Certified accuracy at fixed radii", "run")
    radii = [float(h.removeprefix("r = ")) for h in t.header[2:]]
    labels = {}
    for run, label, *cells in t.rows:
        by_label = {g.label: g for g in groups(run)}
        assert label in by_label, f"{run}: no group {label}"
        for shown, value in zip(cells, certified_accuracy(by_label[label].records, radii), strict=True):
            check(shown, float(value), f"{run} {label}")
        labels.setdefault(run, set()).add(label)
    assert all(len(v) == 6 for v in labels.values()) and len(labels) == 4


def _images(rows: tuple[dict, ...]) -> dict[int, dict]:
    """One record per image (the perturbation fields are the image's, whatever the method)."""
    return {r["idx"]: r for r in rows if r["method"] == "dsmooth" and r["sigma"] == 0.25}


def test_what_the_threats_do_is_the_records() -> None:
    t = table("REPRODUCTION.md", "What the threats do", "run")
    linf_ball_l2 = 8 / 255 * math.sqrt(3 * 32 * 32)
    for run, success, sizes, below in t.rows:
        name = run.replace(", ", "_")
        images = _images(records(name))
        check(success, attack_table(groups(name))[0]["attack_success_rate"], f"{run}: attack success")
        for shown, field in zip(sizes.split(" / "), ("pert_l2", "pert_linf", "pert_mahalanobis"), strict=True):
            check(shown, statistics.median(r[field] for r in images.values()), f"{run}: median {field}")
        if below.isdigit():
            assert int(below) == sum(r["pert_l2"] < 1 for r in images.values()), run
        else:  # the conventional threat: every perturbation inside the 8/255 ball, whose l2 size is 1.74
            assert max(r["pert_l2"] for r in images.values()) <= linf_ball_l2 + 1e-4, run
            if "1.74" in below:
                check("1.74", linf_ball_l2, run)


def _paper_profiles() -> dict:
    return _json(REPRO / "paper_profiles.json")


PROFILE_ROWS = {
    "bundled, paper (k = 100)": "bundled_paper",
    "bundled, conventional (k = 100)": "bundled_conventional",
    "recipe, paper (k = 100)": "recipe_paper",
    "recipe, conventional (k = 100)": "recipe_conventional",
    "bundled, paper (k = 1,000; k ablation)": "ablation_k",
}


def test_profile_table_is_the_rebuilt_profiles() -> None:
    t = table("REPRODUCTION.md", "DSmooth's profiles", "profile")
    profiles = _paper_profiles()
    assert {row[0] for row in t.rows} == set(PROFILE_ROWS)
    for name, calibration, mu_min, mu_max, trace, top in t.rows:
        p = profiles[PROFILE_ROWS[name]]
        images, _, fooled = calibration.partition(" images")
        assert int(images.replace(",", "")) == p["calibration_images"], name
        fooled = fooled.removeprefix(", ")
        if fooled:
            assert int(fooled.removesuffix(" fooled")) == p["kept_perturbations"], name
        check(mu_min, p["mu_min"], f"{name}: mu_min")
        check(mu_min, p["records_mu_min"], f"{name}: mu_min of the records")
        check(mu_max, p["mu_max"], f"{name}: mu_max")
        check(trace, p["trace_per_dim"], f"{name}: trace / d")
        check(top, math.sqrt(p["mu_max"]), f"{name}: top direction")


def _records_mu_min(rows: tuple[dict, ...], k: int) -> float:
    """mu_min as DSmooth's rank-k records imply it: their inscribed l2 radius is R sqrt(mu_min)."""
    ratios = [
        (r["l2_inscribed"] / r["radius"]) ** 2
        for r in rows
        if r["method"] == "dsmooth" and r["k"] == k and r["radius"] > 0
    ]
    assert ratios and max(ratios) - min(ratios) < 1e-9 * max(ratios)
    return ratios[0]


def test_rank_ablation_table_is_the_records_and_profiles() -> None:
    t = table("REPRODUCTION.md", "Ablations", "k")
    ranks = _paper_profiles()["ablation_k"]["ranks"]
    by_key = {(g.config["k"], g.config["sigma"]): g for g in groups("ablation_k")}
    for k, mu_min, mu_max, trace, *per_sigma in t.rows:
        k = k.replace(",", "")
        check(mu_min, ranks[k]["mu_min"], f"k {k}: mu_min")
        check(mu_min, _records_mu_min(records("ablation_k"), int(k)), f"k {k}: mu_min of the records")
        check(mu_max, ranks[k]["mu_max"], f"k {k}: mu_max")
        check(trace, ranks[k]["trace_per_dim"], f"k {k}: trace / d")
        for sigma, cells in zip((0.25, 0.5), per_sigma, strict=True):
            group = by_key[(int(k), sigma)]
            row = summary_table([group])[0]
            at = float(certified_accuracy(group.records, [0.25])[0])
            for shown, value in zip(cells.split(" / "), (row["accuracy"], row["abstain_rate"], at), strict=True):
                check(shown, value, f"k {k} sigma {sigma}")
    assert len(t.rows) == 3


def _ablation_groups() -> dict[tuple, object]:
    return {
        (g.config["method"], g.config["sigma"], g.config["n"], g.config["alpha"]): g
        for g in groups("ablation_n_alpha_s0", "ablation_n_alpha_s1")
    }


ALPHAS = (0.1, 0.01, 0.001, 0.0001, 0.00001)


def _check_list(shown: str, values: list[float], where: str) -> None:
    """ "8%, 6%, 4%" item by item, or "8% at every alpha" / "0% at every radius" for equal values."""
    if " at every " in shown:
        value = shown.partition(" at every ")[0]
        for v in values:
            check(value, v, where)
        return
    items = re.split(r" / |, ", shown.split(" (")[0])
    assert len(items) == len(values), f"{where}: {shown}"
    for item, v in zip(items, values, strict=True):
        check(item, v, where)


def test_n_and_alpha_ablation_tables_are_the_records() -> None:
    by_key = _ablation_groups()
    t = table("REPRODUCTION.md", "Ablations", "sigma")
    for sigma, n, ceiling, at_radii, over_alpha, seconds in t.rows:
        sigma, n = float(sigma), int(n.replace(",", ""))
        group = by_key[("dsmooth", sigma, n, 0.001)]
        where = f"DSmooth sigma {sigma} n {n}"
        check(ceiling, group.records[0]["radius_ceiling"], f"{where}: ceiling")
        _check_list(at_radii, list(certified_accuracy(group.records, [0, 0.1, 0.2, 0.3])), where)
        accuracies = [summary_table([by_key[("dsmooth", sigma, n, a)]])[0]["accuracy"] for a in ALPHAS]
        _check_list(over_alpha, accuracies, f"{where}, over alpha")
        check(seconds, summary_table([group])[0]["mean_seconds"], f"{where}: time")
    assert len(t.rows) == 6
    rs = table("REPRODUCTION.md", "Ablations", "RandSmooth, sigma = 0.25")
    for name, at_radii, over_alpha, seconds in rs.rows:
        n = int(name.removeprefix("n = ").replace(",", ""))
        group = by_key[("randsmooth", 0.25, n, 0.001)]
        where = f"RandSmooth n {n}"
        _check_list(at_radii, list(certified_accuracy(group.records, [0, 0.25, 0.5, 0.75])), where)
        check(at_radii.split("ceiling ")[1].rstrip(")"), group.records[0]["radius_ceiling"], f"{where}: ceiling")
        at = [float(certified_accuracy(by_key[("randsmooth", 0.25, n, a)].records, [0.75])[0]) for a in ALPHAS]
        _check_list(over_alpha, at, f"{where}, over alpha")
        check(seconds, summary_table([group])[0]["mean_seconds"], f"{where}: time")
    assert len(rs.rows) == 3


def test_claim_one_names_every_cell_where_dsmooth_is_ahead() -> None:
    """Claim 1 lists each run and sigma where DSmooth's accuracy at r = 0 beats both other methods."""
    text = " ".join(section("REPRODUCTION.md", "## Which of the paper's claims hold").split("\n2. ")[0].split())
    ahead = []
    for run in ("bundled_paper", "bundled_conventional", "recipe_paper", "recipe_conventional"):
        rows = _by_method_sigma((run,))
        for sigma in (0.25, 0.5):
            ds, rs, ls = (rows[(m, sigma)]["accuracy"] for m in ("dsmooth", "randsmooth", "lsmooth"))
            if ds > max(rs, ls):
                ahead.append(f"{ds:.0%} against {max(rs, ls):.0%}")
    assert ahead, "the records hold cells where DSmooth is ahead"
    count = {1: "one cell", 2: "two cells", 3: "three cells"}[len(ahead)]
    assert count in text, f"claim 1 should say {count}"
    for phrase in ahead:
        assert phrase in text, f"claim 1 misses {phrase}"


# -------------------------------------------------------------- what anisotropic smoothing needs (study 2)


@cache
def _summarize() -> ModuleType:
    return _script(ANISO / "summarize.py")


def test_anisotropic_result_tables_are_what_summarize_prints() -> None:
    """`summarize.py table` on the committed records prints the page's three threat sections verbatim."""
    printed = (
        _summarize()
        .table(sorted(RECORDS.glob("anisotropic_*.jsonl.gz")), _json(ANISO / "profiles.json"))
        .replace("### Threat", "#### Threat")
    )
    text = (DOCS / "REPRODUCTION.md").read_text()
    start = text.index("#### Threat `reachable`")
    end = text.index("### Does the profile describe")
    assert text[start:end].strip() == printed.strip(), "run: summarize.py table docs/reproduction/records/anisotropic_*"


def _knobs(row: dict) -> str:
    return f"{row['normalization']}, {row['k']}, {row['shrinkage']:g}; {row['axis_ratio']:.2g}"


def _corner(entry: dict, normalization: str, k: int, shrinkage: float) -> dict:
    """One corner of the tuning grid as rebuild.py counted it."""
    (row,) = [
        r for r in entry["counted"] if (r["normalization"], r["k"], r["shrinkage"]) == (normalization, k, shrinkage)
    ]
    return row


def _tuning() -> dict:
    return _json(ANISO / "tuning.json")


def test_tuning_table_is_the_recorded_tuning() -> None:
    t = table("REPRODUCTION.md", "What the tuning chose", "threat")
    profiles = _json(ANISO / "profiles.json")
    for threat, sigma, choice, certified, paper in t.rows:
        (knobs,) = [p for p in profiles.values() if p["threat"] == threat and float(sigma) in p["tuned_at_sigma"]]
        assert choice == _knobs(knobs), f"{threat} {sigma}"
        entry = _tuning().get(threat, {}).get(sigma)
        if entry is None:  # not rebuilt: the page must not quote counts
            assert certified == paper == "not recorded", f"{threat} {sigma}: counts without a record"
            continue
        assert knobs == profiles[entry["profile_hash"]]
        chosen = _corner(entry, knobs["normalization"], knobs["k"], knobs["shrinkage"])
        assert chosen == entry["choice"]
        assert certified == f"{chosen['certified']} / {chosen['images']}", f"{threat} {sigma}"
        counted = [r for r in entry["counted"] if (r["normalization"], r["k"], r["shrinkage"]) == ("det", 100, 0.0)]
        if paper == "not recorded":  # rebuild.py could not count the paper's setting without refitting
            assert not counted, f"{threat} {sigma}: tuning.json has the paper's setting"
        else:
            assert paper == f"{counted[0]['certified']} / {counted[0]['images']}", f"{threat} {sigma}"
    assert len(t.rows) == 6


def test_recorded_tuning_matches_the_full_table_the_bundled_profile_carries() -> None:
    """The bundled tuned profile holds the whole 18-setting table of the reachable threat at sigma 0.25;
    rebuild.py's corners of it must be rows of that table, its choice the same."""
    tuning = ThreatProfile.load(MODELS / "resnet20_cifar10_profile.pt").tuning
    entry = _tuning()["reachable"]["0.25"]
    assert len(entry["counted"]) >= 2
    for row in entry["counted"]:
        assert row in tuning["table"]
    assert entry["choice"] == tuning["choice"]


def test_tuning_prose_is_the_recorded_tables() -> None:
    text = _flat(section("REPRODUCTION.md", "### What the tuning chose"))
    full = ThreatProfile.load(MODELS / "resnet20_cifar10_profile.pt").tuning["table"]
    cell = {(r["normalization"], r["k"], r["shrinkage"]): r for r in full}
    for norm in ("det", "trace"):  # never falls as the shrinkage grows or the rank shrinks
        for k in (100, 30, 10):
            counts = [cell[(norm, k, g)]["certified"] for g in (0.0, 0.5, 0.9)]
            assert counts == sorted(counts), (norm, k)
        for g in (0.0, 0.5, 0.9):
            counts = [cell[(norm, k, g)]["certified"] for k in (100, 30, 10)]
            assert counts == sorted(counts), (norm, g)
    det, trace = re.search(r"det and trace nearly tie at the corner \((\d+) and (\d+) of 100\)", text).groups()
    assert (int(det), int(trace)) == (cell[("det", 10, 0.9)]["certified"], cell[("trace", 10, 0.9)]["certified"])
    trace, det = re.search(r"trace certifies more than det \((\d+) against (\d+)\)", text).groups()
    assert (int(trace), int(det)) == (cell[("trace", 100, 0.0)]["certified"], cell[("det", 100, 0.0)]["certified"])
    lowest = re.search(r"every setting is eligible \(the lowest ratio is ([\d.]+)\)", text).group(1)
    assert all(r["eligible"] for r in full)
    check(lowest, min(r["axis_ratio"] for r in full), "lowest axis ratio")
    low, high = re.search(r"the six choices' ratios \(([\d.]+)-([\d.]+)\)", text).groups()
    ratios = [p["axis_ratio"] for t in ("reachable", "conventional", "paper") for p in _study_two_profile(t, "tuned")]
    check(low, min(ratios), "lowest chosen ratio")
    check(high, max(ratios), "highest chosen ratio")
    corners = re.search(
        r"paper threat's four corners.*?\((\d+) and (\d+) at sigma = 0.25, (\d+) and (\d+) at 0.5\).*?"
        r"\((\d+) and (\d+) against (\d+) and (\d+)\)",
        text,
    )
    assert corners, "the paper threat's corners"
    paper = _tuning()["paper"]
    expected = [
        *(_corner(paper[s], n, 10, 0.9)["certified"] for s in ("0.25", "0.5") for n in ("det", "trace")),
        *(_corner(paper[s], "trace", 100, 0.0)["certified"] for s in ("0.25", "0.5")),
        *(_corner(paper[s], "det", 100, 0.0)["certified"] for s in ("0.25", "0.5")),
    ]
    assert [int(v) for v in corners.groups()] == expected


def _energy_profile(threat: str, name: str) -> str:
    """The profile file a row of the energy table names."""
    if name == "paper's setting":
        return f"{threat}_paper.pt"
    if name == "tuned (both sigmas)":
        return f"{threat}_tuned_0.25.pt"
    return f"{threat}_tuned_{name.removeprefix('tuned at ')}.pt"


def test_energy_table_is_what_energy_py_wrote() -> None:
    t = table("REPRODUCTION.md", "Does the profile describe", "threat")
    energy = _json(ANISO / "energy.json")
    profiles = _json(ANISO / "profiles.json")
    assert {row[0] for row in t.rows if row[0]} == set(energy), "a row for each threat energy.py ran, no other"
    threat = ""
    seen = set()
    for name, fooled, profile, k, calibration, test, random, ratio in t.rows:
        threat = name or threat
        run = energy[threat]
        if fooled:
            assert fooled == f"{run['fooled']} / {run['images']}", threat
        rows = {row["file"]: row for row in run["profiles"]}
        row = rows[_energy_profile(threat, profile)]
        if profile == "tuned (both sigmas)":  # one St chosen at both sigmas
            assert rows[f"{threat}_tuned_0.5.pt"]["profile_hash"] == row["profile_hash"]
        assert row["profile_hash"] in profiles and profiles[row["profile_hash"]]["threat"] == threat
        assert int(k) == row["k"]
        where = f"{threat} {profile}"
        check(calibration, row["calibration_share"], f"{where}: calibration share")
        check(test, row["test_share"], f"{where}: test share")
        check(random, row["random_share"], f"{where}: random share")
        check(ratio, row["median_mahalanobis_over_l2"], f"{where}: ratio")
        seen.add(row["profile_hash"])
    assert seen == {row["profile_hash"] for run in energy.values() for row in run["profiles"]}, "every profile"


# ------------------------------------------------------------------------------- docs/BUNDLED_MODEL.md

CARDS = {
    "stage 1 (30 epochs)": REPRO / "candidate14" / "resnet20_noise30.json",
    "bundled (stage 2)": MODELS / "resnet20_cifar10.json",
    "first bundled model (v1)": REPRO / "resnet20_bundled_v1.json",
    "accuracy": REPRO / "resnet20_bundled_v1.json",  # the v1 section's one-column table
}


def _card_cells(row_label: str, cell: str, card: dict) -> Iterator[tuple[str, float]]:
    """The (shown, value) pairs of one cell of a card table."""
    if row_label == "clean":
        yield cell.strip("*"), card["clean_accuracy"]
        return
    method = row_label.split(" ")[0]
    shown = cell.split(" (")[0].strip("*").split(" / ")
    if len(shown) == 1:  # "not trained on it"
        assert f"{method} sigma=0.25" not in card["noisy_accuracy"], f"{method}: the card has numbers"
        return
    for text, sigma in zip(shown, ("0.12", "0.25", "0.5"), strict=True):
        yield text, card["noisy_accuracy"][f"{method} sigma={sigma}"]


@pytest.mark.parametrize("heading", ["What it scores", "What it scored"])
def test_card_tables_are_the_model_cards(heading: str) -> None:
    t = table("BUNDLED_MODEL.md", heading, "input")
    for label, *cells in t.rows:
        for column, cell in zip(t.header[1:], cells, strict=True):
            card = _json(CARDS[column])
            for shown, value in _card_cells(label, cell, card):
                check(shown, value, f"{heading}: {label}, {column}")


def _card_tsv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_card_smoothed_accuracy_is_its_records() -> None:
    """The bundled model's smoothed RandSmooth figures: the TSV's rows, the card and the page agree."""
    rows = _card_tsv(RECORDS / "bundled_card_randsmooth.tsv")
    assert len(rows) == 500
    correct = [int(r["predict"]) == int(r["label"]) for r in rows]
    radius = [float(r["radius"]) for r in rows]
    figures = {
        "certified": sum(correct) / len(rows),
        "abstained": sum(int(r["predict"]) == -1 for r in rows) / len(rows),
        "at_l2_0.25": sum(c and r >= 0.25 for c, r in zip(correct, radius, strict=True)) / len(rows),
        "at_l2_0.5": sum(c and r >= 0.5 for c, r in zip(correct, radius, strict=True)) / len(rows),
        "seconds": sum(float(r["time"]) for r in rows) / len(rows),
    }
    card = _json(MODELS / "resnet20_cifar10.json")["smoothed_certified_accuracy_r0"]["RandSmooth"]
    assert card == {
        "certified_accuracy": figures["certified"],
        "abstained": figures["abstained"],
        "at_l2_0.25": figures["at_l2_0.25"],
        "at_l2_0.5": figures["at_l2_0.5"],
    }
    text = " ".join(section("BUNDLED_MODEL.md", "## What it scores").split())
    match = re.search(
        r"\*\*([\d.]+%)\*\* certified at r = 0.*?stage 1: ([\d.]+%), [^)]*\), ([\d.]+%) abstentions, "
        r"([\d.]+%) at l2 radius 0.25 and ([\d.]+%) at 0.5; ([\d.]+) s per image",
        text,
    )
    assert match, "the card paragraph's figures"
    certified, stage1, abstained, at25, at5, seconds = match.groups()
    check(certified, figures["certified"], "certified")
    check(abstained, figures["abstained"], "abstained")
    check(at25, figures["at_l2_0.25"], "at 0.25")
    check(at5, figures["at_l2_0.5"], "at 0.5")
    check(seconds, figures["seconds"], "seconds per image")
    stage1_card = _json(REPRO / "candidate14" / "resnet20_noise30.json")["smoothed_certified_accuracy_r0"]
    check(stage1, stage1_card["RandSmooth"]["certified_accuracy"], "stage 1")
    check(stage1, _tsv_accuracy(REPRO / "candidate14" / "randsmooth.tsv"), "stage 1 records")


# ----------------------------------------------------------------------------------- figures in prose


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_claim_four_times_are_the_records() -> None:
    text = _flat(section("REPRODUCTION.md", "## Which of the paper's claims hold").split("\n5. ")[0].split("\n4. ")[1])
    match = re.search(
        r"bundled model ([\d.]+) / ([\d.]+) / ([\d.]+) s \(DSmooth / RandSmooth / LSmooth\) at sigma = 0.25 and "
        r"([\d.]+) / ([\d.]+) / ([\d.]+) s at sigma = 0.5; paper-recipe model ([\d.]+)-([\d.]+) s for all three",
        text,
    )
    assert match, "claim 4's times"
    shown = match.groups()
    bundled = _by_method_sigma(("bundled_paper",))
    for i, (sigma, method) in enumerate((s, m) for s in (0.25, 0.5) for m in ("dsmooth", "randsmooth", "lsmooth")):
        check(shown[i], bundled[(method, sigma)]["mean_seconds"], f"claim 4: bundled {method} {sigma}")
    recipe = [
        row["mean_seconds"]
        for run in ("recipe_paper", "recipe_conventional")
        for row in _by_method_sigma((run,)).values()
    ]
    check(shown[6], min(recipe), "claim 4: fastest recipe run")
    check(shown[7], max(recipe), "claim 4: slowest recipe run")


def test_anisotropic_times_agree_within_the_share_the_page_gives() -> None:
    text = _flat((DOCS / "REPRODUCTION.md").read_text())
    shown = int(re.search(r"the same for all four smoothings within (\d+)%", text).group(1))
    spread = 0.0
    for path in RECORDS.glob("anisotropic_*.jsonl.gz"):
        rows = summary_table(group_records(load_records([path])))
        for sigma in {row["sigma"] for row in rows}:
            times = [row["mean_seconds"] for row in rows if row["sigma"] == sigma]
            spread = max(spread, max(times) / min(times) - 1)
    assert math.ceil(100 * spread) == shown, f"the slowest smoothing is {spread:.1%} slower than the fastest"


def _tsv_accuracy(path: Path) -> float:
    rows = _card_tsv(path)
    return sum(int(r["correct"]) for r in rows) / len(rows)


def test_history_stage_one_figures_are_its_records() -> None:
    text = _flat(section("REPRODUCTION.md", "## History"))
    match = re.search(
        r"gave ([\d.]+%) \(paper setting\), ([\d.]+%) \(tuned.*?\), ([\d.]+%) \(RandSmooth\) and ([\d.]+%)", text
    )
    assert match, "the stage-1 figures"
    for shown, name in zip(match.groups(), ("dsmooth_paper", "dsmooth_tuned", "randsmooth", "lsmooth"), strict=True):
        path = REPRO / "candidate14" / f"{name}.tsv"
        assert len(_card_tsv(path)) == 500
        check(shown, _tsv_accuracy(path), f"stage 1 {name}")


def test_set_up_clean_accuracies_are_the_cards() -> None:
    text = _flat(section("REPRODUCTION.md", "## Set-up"))
    v1 = re.search(r"DSmooth noise; ([\d.]+%) clean accuracy", text).group(1)
    recipe = re.search(r"Square \+ FGSM adversarial examples .*?; ([\d.]+%) clean accuracy", text).group(1)
    check(v1, _json(REPRO / "resnet20_bundled_v1.json")["clean_accuracy"], "v1 clean")
    check(recipe, _json(REPRO / "resnet20_paper_recipe.json")["clean_accuracy"], "recipe clean")
    study2 = _flat(section("REPRODUCTION.md", "### Set-up"))
    clean, smoothed = re.search(r"([\d.]+%) clean accuracy, and ([\d.]+%) certified", study2).groups()
    card = _json(MODELS / "resnet20_cifar10.json")
    check(clean, card["clean_accuracy"], "bundled clean")
    check(smoothed, card["smoothed_certified_accuracy_r0"]["RandSmooth"]["certified_accuracy"], "bundled smoothed")


def test_bundled_model_prose_figures_are_its_files() -> None:
    text = _flat((DOCS / "BUNDLED_MODEL.md").read_text())
    params, size = re.search(r"ResNet-20 \(([\d,]+) parameters, ([\d.]+) MB\)", text).groups()
    state = torch.load(MODELS / "resnet20_cifar10.pt", weights_only=True)
    state = state.get("state_dict", state)
    learned = sum(
        v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )
    assert int(params.replace(",", "")) == learned
    check(size, (MODELS / "resnet20_cifar10.pt").stat().st_size / 1e6, "file size")
    stage1 = _json(REPRO / "candidate14" / "resnet20_noise30.json")
    stage2 = _json(MODELS / "resnet20_cifar10.json")
    times = re.search(
        r"stage 1 ([\d,]+) s \((\d+)-(\d+) s per epoch.*?stage 2 ([\d,]+) s \((\d+)-(\d+) s per epoch", text
    )
    for shown, card in zip(times.groups()[::3], (stage1, stage2), strict=True):
        check(shown, card["wall_seconds"], "wall time")
    for card, low, high in ((stage1, *times.groups()[1:3]), (stage2, *times.groups()[4:6])):
        epochs = [int(re.search(r"(\d+)s$", line).group(1)) for line in card["log_summary"]]
        assert (int(low), int(high)) == (min(epochs), max(epochs))
    v1_stage2 = re.search(r"Wall time of stage 2 \(its card's `wall_seconds`\): (\d+) s", text).group(1)
    check(v1_stage2, _json(REPRO / "resnet20_bundled_v1.json")["wall_seconds"], "v1 stage 2")
    mu_max, mu_min = re.search(r"mu_max = (\d+), mu_min = ([\d.]+) for the final profile", text).groups()
    profile = _paper_profiles()["bundled_paper"]
    check(mu_max, profile["mu_max"], "v1 profile mu_max")
    check(mu_min, profile["mu_min"], "v1 profile mu_min")
    top = re.search(r"about (\d+) sigma, along the top stripe", text).group(1)
    check(top, math.sqrt(profile["mu_max"]), "v1 top direction")


def _study_two_profile(threat: str, setting: str) -> list[dict]:
    return [p for p in _json(ANISO / "profiles.json").values() if p["threat"] == threat and p["setting"] == setting]


def test_what_it_says_profile_figures_are_profiles_json() -> None:
    text = _flat(section("REPRODUCTION.md", "### What it says"))
    stripes = re.search(r"its noise is (\d+) times stronger than isotropic noise along the stripes", text).group(1)
    (paper,) = _study_two_profile("paper", "paper")
    check(stripes, math.sqrt(paper["mu_max"]), "the paper threat's top direction")
    low, high = re.search(r"sqrt\(mu_max\) = (\d+)-(\d+) times stronger", text).groups()
    tops = [
        math.sqrt(p["mu_max"]) for t in ("reachable", "conventional", "paper") for p in _study_two_profile(t, "paper")
    ]
    check(low, min(tops), "weakest paper-setting top direction")
    check(high, max(tops), "strongest paper-setting top direction")
    low, high = re.search(r"while staying anisotropic\*\* \(axis ratio ([\d.]+)-([\d.]+)\)", text).groups()
    ratios = [p["axis_ratio"] for t in ("reachable", "conventional", "paper") for p in _study_two_profile(t, "tuned")]
    check(low, min(ratios), "lowest tuned axis ratio")
    check(high, max(ratios), "highest tuned axis ratio")


def test_energy_prose_is_energy_json() -> None:
    text = _flat(section("REPRODUCTION.md", "### Does the profile describe"))
    match = re.search(
        r"top (\d+) directions hold (\d+%) of the energy of the (\d+) perturbations they were fitted to, but "
        r"only ([\d.]+%) of the energy of new images' perturbations \(a random \d+-dimensional subspace would "
        r"hold ([\d.]+%)\)",
        text,
    )
    assert match, "the reachable profile's energy sentence"
    k, calibration, kept, test, random = match.groups()
    (profile,) = _study_two_profile("reachable", "paper")
    row = next(r for r in _json(ANISO / "energy.json")["reachable"]["profiles"] if r["file"] == "reachable_paper.pt")
    assert int(k) == row["k"] and int(kept) == profile["kept_perturbations"]
    check(calibration, row["calibration_share"], "calibration share")
    check(test, row["test_share"], "test share")
    check(random, row["random_share"], "random share")
    paper = next(r for r in _json(ANISO / "energy.json")["paper"]["profiles"] if r["file"] == "paper_paper.pt")
    share, ratio = re.search(
        r"carry over \((\d+%) on new images; the Mahalanobis size of a new perturbation is ([\d.]+)", text
    ).groups()
    check(share, paper["test_share"], "paper threat test share")
    check(ratio, paper["median_mahalanobis_over_l2"], "paper threat ratio")


def test_every_image_certified_against_the_attack_had_a_perturbation_below_one() -> None:
    """What the threats do: the covered images are those the base model got wrong before the attack."""
    text = _flat(section("REPRODUCTION.md", "### What the threats do"))
    low, high = re.search(r"Nearly two fifths of the images \((\d+)-(\d+) of 100\)", text).groups()
    counts = []
    for run in ("bundled_paper", "recipe_paper"):
        counts.append(sum(r["pert_l2"] < 1 for r in _images(records(run)).values()))
    assert (int(low), int(high)) == (min(counts), max(counts))
    for run in ("bundled_paper", "bundled_conventional", "recipe_paper", "recipe_conventional"):
        assert all(r["pert_l2"] < 1 for r in records(run) if r["covered"]), run
