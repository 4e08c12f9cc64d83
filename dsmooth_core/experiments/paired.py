"""Two smoothings on the same images: who certifies which, an exact sign test, and Holm's correction.

Both methods face the same attack on each image (the attack is seeded from the run seed and the image,
not the method), so an image's two outcomes form a pair. Only the discordant pairs (one method yes, the
other no) say which is ahead: under "no difference" each is A's with probability 1/2, hence the exact
two-sided binomial test on them (scipy.stats.binomtest). Several such tests form a family; Holm's
step-down adjustment keeps the chance of any false rejection in it at most the level, for any dependence.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from scipy.stats import binomtest

from dsmooth_core.experiments.analysis import Group, certified_against_successful_attack
from dsmooth_core.experiments.records import Record
from dsmooth_core.noise import method_class

Outcome = Callable[[Record], bool | None]  # None: the record does not know (an earlier version's)
# what must agree for two records of one image to have faced the same attack and the same draws' budget
SAME_IMAGES = ("dataset", "split", "model_hash", "model_identity", "attack", "attack_config", "seed")
PAIRING_FIELDS = (*SAME_IMAGES, "sigma", "n0", "n", "alpha")
_CELLS = {(True, True): "both", (True, False): "only_a", (False, True): "only_b", (False, False): "neither"}


@dataclass(frozen=True)
class PairedCounts:
    """Images of both record sets, by outcome; ``unknown``: images whose outcome one of the two lacks."""

    both: int
    only_a: int
    only_b: int
    neither: int
    unknown: int
    p_value: float  # exact two-sided sign test on only_a vs only_b; 1 when no pair is discordant

    @property
    def images(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither


def paired_comparison(
    records_a: Sequence[Record], records_b: Sequence[Record], outcome: Outcome = certified_against_successful_attack
) -> PairedCounts:
    """Compare two methods' ``outcome`` image by image, over the images both record sets hold."""
    by_image = {r["idx"]: r for r in records_b}
    counts = {"both": 0, "only_a": 0, "only_b": 0, "neither": 0, "unknown": 0}
    for a in records_a:
        b = by_image.get(a["idx"])
        if b is None:
            continue
        differing = [name for name in SAME_IMAGES if a.get(name) != b.get(name)]
        if differing:
            raise ValueError(f"image {a['idx']}: the two records differ in {', '.join(differing)}, so not one attack")
        first, second = outcome(a), outcome(b)
        if first is None or second is None:
            counts["unknown"] += 1
        else:
            counts[_CELLS[(first, second)]] += 1
    discordant = counts["only_a"] + counts["only_b"]
    p_value = binomtest(counts["only_a"], discordant, 0.5).pvalue if discordant else 1.0
    return PairedCounts(**counts, p_value=float(p_value))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest becomes the running maximum
    of (m - j + 1) p_(j) over j <= i, capped at 1. Reject where the adjusted value is at most the level."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [math.nan] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_table(groups: Sequence[Group], outcome: Outcome = certified_against_successful_attack) -> list[dict]:
    """Every two groups that smooth differently on the same images, attack and budget (sigma, n0, n, alpha),
    compared by ``outcome``; ``p_holm`` adjusts over all rows of the table, which form the family.

    Pairs with no image whose outcome both know (records of an earlier version) are left out of it.
    """
    rows: list[dict[str, Any]] = []
    for a, b in itertools.combinations(groups, 2):
        if any(_frozen(a.config.get(f)) != _frozen(b.config.get(f)) for f in PAIRING_FIELDS) or _same_smoothing(a, b):
            continue
        counts = paired_comparison(a.records, b.records, outcome)
        if not counts.images:
            continue
        rows.append(
            {
                "label_a": a.label,
                "label_b": b.label,
                "attack": a.config["attack"],
                "sigma": a.config["sigma"],
                "n": a.config["n"],
                "alpha": a.config["alpha"],
                "images": counts.images,
                "unknown": counts.unknown,
                "both": counts.both,
                "only_a": counts.only_a,
                "only_b": counts.only_b,
                "neither": counts.neither,
                "p_value": counts.p_value,
            }
        )
    for row, adjusted in zip(rows, holm([row["p_value"] for row in rows]), strict=True):
        row["p_holm"] = adjusted
    return rows


def _same_smoothing(a: Group, b: Group) -> bool:
    """Two runs' groups of a method that ignores the profile are one smoothing: no test to spend."""
    return a.method == b.method and a.config["k"] == b.config["k"] and not method_class(a.method).needs_profile


def _frozen(value: Any) -> Any:
    return repr(sorted(value.items())) if isinstance(value, dict) else value
