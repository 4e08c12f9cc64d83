"""Choose DSmooth's covariance knobs (normalization, rank k, shrinkage) on held-out calibration images.

The paper fixes det normalization and k = 100; ``docs/REPRODUCTION.md`` shows that this setting
abstains on most images. Which setting works is an empirical question, so it is answered on images
that are neither test images nor the images whose perturbations were fitted: the calibration set is
split into a fitting part and a tuning part, every setting of a small grid certifies the tuning part,
and the setting with the highest certified accuracy at r = 0 wins. Settings whose St is nearly
isotropic (axis ratio below ``min_axis_ratio``) are not eligible: they would be RandSmooth by another
name. They are listed in the table with their ratio but never certified, since they cannot win, and
the grid reaches up to that floor (docs/MATH.md section 3).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsmooth_core.certify import certification_checks, certify
from dsmooth_core.contract import model_contract
from dsmooth_core.covariance import NORMALIZATIONS, LowRankCovariance
from dsmooth_core.device import generator_for
from dsmooth_core.noise import AnisotropicGaussian
from dsmooth_core.progress import ProgressCallback, report
from dsmooth_core.seeds import derive_seed
from dsmooth_core.settings import ProfileShape


@dataclass(frozen=True)
class TuningGrid:
    """The settings tried; the first eligible one wins ties, so list the paper's setting first.

    Settings run through normalizations, then ranks (descending), then shrinkages (ascending). With
    ``shrink_to_floor`` each (normalization, k) also tries the largest shrinkage whose axis ratio still
    reaches ``min_axis_ratio``: the most isotropic setting the rule allows, where the tuning stops when
    more isotropic noise keeps certifying more.
    """

    normalizations: tuple[str, ...] = ("det", "trace")
    ranks: tuple[int, ...] = (100, 10, 1)
    shrinkages: tuple[float, ...] = (0.0, 0.9, 0.97)
    min_axis_ratio: float = 2.0
    shrink_to_floor: bool = True

    def __post_init__(self) -> None:
        if not (self.normalizations and self.ranks and self.shrinkages):
            raise ValueError("the tuning grid needs at least one normalization, rank and shrinkage")
        for name in self.normalizations:
            if name not in NORMALIZATIONS:
                raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {name!r}")
        if min(self.ranks) < 1:
            raise ValueError(f"every rank k must be at least 1, got {self.ranks}")
        if not all(0.0 <= g <= 1.0 for g in self.shrinkages):
            raise ValueError(f"every shrinkage must lie in [0, 1], got {self.shrinkages}")
        if not self.min_axis_ratio >= 1.0:
            raise ValueError(f"min_axis_ratio must be at least 1, got {self.min_axis_ratio}")

    def settings(self, fitted: LowRankCovariance) -> list[ProfileShape]:
        """The settings this grid tries on ``fitted``, in grid order (ranks above the fit's are one setting)."""
        ranks = sorted({min(k, fitted.k) for k in self.ranks}, reverse=True)
        edges = {k: floor_shrinkage(fitted.with_rank(k), self.min_axis_ratio) for k in ranks}
        shapes = []
        for normalization, k in product(self.normalizations, ranks):
            shrinkages = set(self.shrinkages)
            if self.shrink_to_floor and edges[k] is not None:
                shrinkages.add(edges[k])
            shapes += [ProfileShape(normalization, k, g) for g in sorted(shrinkages)]
        return shapes

    @property
    def most_settings(self) -> int:
        """How many settings the grid tries at most (before ranks clamp to the fit's)."""
        per_rank = len(set(self.shrinkages)) + self.shrink_to_floor
        return len(self.normalizations) * len(set(self.ranks)) * per_rank


@dataclass(frozen=True)
class TuningRow:
    """One setting's score on the tuning images; an excluded setting is not certified (None)."""

    normalization: str
    k: int
    shrinkage: float
    axis_ratio: float  # sqrt(mu_max / mu_min) of St: 1 is isotropic
    certified: int | None  # tuning images certified with the correct class (r = 0), of those evaluated
    abstained: int | None
    images: int
    eligible: bool
    evaluated: int  # images certified: all of them, fewer when stopped early, 0 when not eligible

    @property
    def stopped(self) -> bool:
        """Certification stopped early (``prune``): even certifying every image left, it could not win."""
        return self.eligible and self.evaluated < self.images

    @property
    def shape(self) -> ProfileShape:
        """This row's setting of the knobs."""
        return ProfileShape(self.normalization, self.k, self.shrinkage)

    @property
    def accuracy(self) -> float | None:
        return None if self.certified is None or self.stopped else self.certified / self.images


@dataclass(frozen=True)
class TuningResult:
    rows: tuple[TuningRow, ...]
    choice: TuningRow
    sigma: float
    n0: int
    n: int
    alpha: float
    seed: int
    grid: TuningGrid

    def apply(self, fitted: LowRankCovariance) -> LowRankCovariance:
        """The fitted covariance with the chosen knobs."""
        return self.choice.shape.apply(fitted)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a profile's metadata and for reports."""
        return {
            "sigma": self.sigma,
            "n0": self.n0,
            "n": self.n,
            "alpha": self.alpha,
            "seed": self.seed,
            "grid": {key: list(v) if isinstance(v, tuple) else v for key, v in asdict(self.grid).items()},
            "choice": asdict(self.choice),
            "table": [asdict(row) for row in self.rows],
        }


def axis_ratio(covariance: LowRankCovariance) -> float:
    return math.sqrt(covariance.mu_max / covariance.mu_min)


def floor_shrinkage(covariance: LowRankCovariance, min_axis_ratio: float) -> float | None:
    """About the largest shrinkage whose axis ratio is still ``min_axis_ratio`` or more: the most isotropic allowed.

    The ratio falls monotonically from its unshrunk value to 1 at shrinkage 1 (docs/MATH.md section 3),
    so a bisection finds the crossing; it is then rounded down to two significant digits of its distance
    to 1 (0.942, 0.9937), a value a table can show and a command line can repeat. None when no
    shrinkage reaches the floor, or when every one does (a floor of 1 excludes nothing).
    """

    def reaches(shrinkage: float) -> bool:
        return axis_ratio(covariance.with_shrinkage(shrinkage)) >= min_axis_ratio

    if min_axis_ratio <= 1 or not reaches(0.0):
        return None
    low, high = 0.0, 1.0  # reaches(low), and not reaches(high): at shrinkage 1 the ratio is 1
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if reaches(middle) else (low, middle)
    decimals = 1 - math.floor(math.log10(1 - low))
    shrinkage = round(math.floor(low * 10**decimals) / 10**decimals, decimals)
    return shrinkage if reaches(shrinkage) else round(shrinkage - 10**-decimals, decimals)  # a rounding ulp


def tune_covariance(
    model: nn.Module,
    fitted: LowRankCovariance,
    images: torch.Tensor,
    labels: Sequence[int] | torch.Tensor,
    *,
    sigma: float,
    grid: TuningGrid = TuningGrid(),  # frozen, so one shared default is safe
    n0: int = 100,
    n: int = 500,
    alpha: float = 0.001,
    batch_size: int = 500,
    seed: int = 0,
    prune: bool = False,
    progress: ProgressCallback | None = None,
) -> TuningResult:
    """Certify the tuning ``images`` under every eligible setting of ``grid`` and pick the most accurate.

    ``fitted`` must come from perturbations of other images than ``images``. Every setting sees the
    same generator seed per image, so settings are compared on common random numbers. Settings below
    the axis-ratio floor get a row without certificates: they cannot win, so they cost no forwards.
    With ``prune`` the settings are certified most isotropic first, and a setting stops as soon as it
    could not win even by certifying every image left: the choice is the same, the stopped rows hold
    counts over fewer images.
    """
    labels = [int(v) for v in labels]
    if len(labels) != len(images) or not len(images):
        raise ValueError(f"tuning needs one label per image and at least one image, got {len(images)} / {len(labels)}")
    shapes = grid.settings(fitted)
    ratios = [axis_ratio(shape.apply(fitted)) for shape in shapes]
    eligible = [ratio >= grid.min_axis_ratio for ratio in ratios]
    if not any(eligible):
        raise ValueError(
            f"no setting of the grid is anisotropic enough (axis ratio >= {grid.min_axis_ratio}; the highest is "
            f"{max(ratios):.3g}); lower the shrinkages or min_axis_ratio"
        )
    order = [i for i, allowed in enumerate(eligible) if allowed]
    if prune:
        order.reverse()  # the most isotropic first: it usually leads, so the others stop early
    total, done = len(order) * len(images), 0
    scores: dict[int, tuple[int, int, int]] = {}  # setting -> certified, abstained, images evaluated
    leader: tuple[int, int] | None = None  # (certified, setting) of the best setting certified in full
    with model_contract(model, tuple(images.shape[1:])):  # checked once, not once per certificate
        for i in order:
            noise = AnisotropicGaussian(sigma, shapes[i].apply(fitted))
            certified = abstained = evaluated = 0
            with certification_checks(model, noise, tuple(images.shape[1:])):  # once per setting, not per image
                for index, (x, label) in enumerate(zip(images, labels, strict=True)):
                    if prune and leader is not None and _cannot_win(certified + len(images) - index, i, leader):
                        break
                    generator = generator_for(model, derive_seed(seed, index, "tuning"))
                    cert = certify(model, x, noise, n0, n, alpha, batch_size, generator)
                    certified += cert.prediction == label
                    abstained += cert.abstained
                    evaluated += 1
                    done += 1
                    report(progress, done, total)
            if evaluated < len(images):  # the certificates it skipped count as done
                done += len(images) - evaluated
                report(progress, done, total)
            scores[i] = (certified, abstained, evaluated)
            if evaluated == len(images) and (leader is None or not _cannot_win(certified, i, leader)):
                leader = (certified, i)
    rows = tuple(
        TuningRow(
            normalization=shape.normalization,
            k=shape.k,
            shrinkage=shape.shrinkage,
            axis_ratio=ratio,
            certified=scores[i][0] if i in scores else None,
            abstained=scores[i][1] if i in scores else None,
            images=len(images),
            eligible=i in scores,
            evaluated=scores[i][2] if i in scores else 0,
        )
        for i, (shape, ratio) in enumerate(zip(shapes, ratios, strict=True))
    )
    assert leader is not None  # at least one setting is eligible, and the first one evaluated is never stopped
    return TuningResult(rows=rows, choice=rows[leader[1]], sigma=sigma, n0=n0, n=n, alpha=alpha, seed=seed, grid=grid)


def _cannot_win(ceiling: int, setting: int, leader: tuple[int, int]) -> bool:
    """A setting that certifies at most ``ceiling`` loses to ``leader``: fewer, or as many but later in grid order."""
    return (ceiling, -setting) < (leader[0], -leader[1])


def split_calibration(indices: Sequence[int], tuning_share: float, seed: int) -> tuple[list[int], list[int]]:
    """Split calibration indices into (fitting, tuning) parts, disjoint, by a seeded permutation."""
    if not 0 < tuning_share < 1:
        raise ValueError(f"the tuning share must lie strictly between 0 and 1, got {tuning_share}")
    indices = [int(i) for i in indices]
    if len(set(indices)) != len(indices):
        raise ValueError("calibration indices must be distinct")
    count = round(len(indices) * tuning_share)
    if count < 1 or len(indices) - count < 2:
        raise ValueError(f"{len(indices)} calibration images are too few to split with share {tuning_share}")
    order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(seed)).tolist()
    tuning = sorted(indices[i] for i in order[:count])
    fitting = sorted(indices[i] for i in order[count:])
    return fitting, tuning


def write_tuning_record(record: dict[str, Any], path: str | Path) -> None:
    """Write a profile's tuning record (``ThreatProfile.tuning``) as JSON, a file docs can quote."""
    path = Path(path)
    if path.suffix != ".json":
        raise ValueError(f"the tuning table is written as JSON; give a path ending in .json, not {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


def read_tuning_record(path: str | Path) -> dict[str, Any]:
    """A tuning record written by :func:`write_tuning_record`."""
    record = json.loads(Path(path).read_text())
    if not isinstance(record, dict) or not {"sigma", "choice", "table"} <= record.keys():
        raise ValueError(f"{path} holds no tuning record (it needs sigma, choice and table)")
    return record


def _knobs(row: dict[str, Any]) -> tuple[str, int, float]:
    return row["normalization"], row["k"], row["shrinkage"]


def _score(row: dict[str, Any]) -> str:
    """'82 / 100', or '3 of the first 20 (stopped: cannot win)' for a setting that ``prune`` stopped."""
    evaluated = row.get("evaluated", row["images"])  # absent from records written before pruning
    if evaluated < row["images"]:
        return f"{row['certified']} of the first {evaluated} (stopped: cannot win)"
    return f"{row['certified']} / {row['images']}"


def tuning_markdown(record: dict[str, Any]) -> str:
    """Every setting of one tuning as a markdown table: its ratio, its score, and whether it was chosen or excluded."""
    floor = record.get("grid", {}).get("min_axis_ratio")
    below = f"axis ratio below {floor:g}" if floor is not None else "axis ratio below the floor"
    lines = [
        "| normalization | k | shrinkage | axis ratio | certified at r = 0 | abstained | |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in record["table"]:
        normalization, k, shrinkage = _knobs(row)
        if row["eligible"]:
            scores = f"{_score(row)} | {row['abstained']}"
            note = "chosen" if _knobs(row) == _knobs(record["choice"]) else ""
        else:
            scores, note = "not certified | ", f"excluded ({below})"
        lines.append(f"| {normalization} | {k} | {shrinkage:g} | {row['axis_ratio']:.3g} | {scores} | {note} |")
    return "\n".join(lines)


def choices_markdown(records: Iterable[tuple[str, dict[str, Any]]], paper: tuple[str, int, float]) -> str:
    """One line per ``(label, record)``: the choice, its score, the ``paper`` setting's score, the exclusions."""
    lines = [
        "| tuning | sigma | choice (normalization, k, shrinkage; axis ratio) | certified at r = 0 "
        "| the paper's setting on the same images | settings excluded / tried |",
        "|---|---|---|---|---|---|",
    ]
    for label, record in records:
        choice = record["choice"]
        normalization, k, shrinkage = _knobs(choice)
        same = [row for row in record["table"] if _knobs(row) == paper and row["eligible"]]
        paper_score = _score(same[0]) if same else "not tried"
        excluded = sum(not row["eligible"] for row in record["table"])
        lines.append(
            f"| {label} | {record['sigma']:g} | {normalization}, {k}, {shrinkage:g}; {choice['axis_ratio']:.3g} "
            f"| {choice['certified']} / {choice['images']} | {paper_score} | {excluded} / {len(record['table'])} |"
        )
    return "\n".join(lines)
