"""Analyses of experiment records alone (no model): the paper's curves and tables, and fair comparisons.

- Certified accuracy at radius r (the paper's Fig. 1, Cohen's "approximate certified accuracy"):
  the fraction of a group's images with ``prediction == label`` and ``radius >= r``, each method in
  its own metric; the same with the inscribed l2 radius and the l1 radius puts all three in one metric.
- Certified against the attack: the fraction of images whose certificate names the true label and
  contains the actual attack perturbation (``covered``), the one number on the same threat for all.
- Successful attacks (docs/MATH.md section 6): of the images whose attack fooled the base model (right on
  the clean image, wrong on the attacked one), the share certified against the attack, and what the
  smoothed classifier answers at the attacked image (right, fooled, abstains). Records written before
  these fields existed count as unknown, never as false.
- Mean time per image (Tables 1-6) and ablations over k, n and alpha (Fig. 3-5).

High-probability bound (Cohen et al. 2019, Sec. 4 / App.): each certificate is wrong with probability
at most alpha, independently across images (each has its own noise). Of the m images counted at a
radius, the number F of wrong certificates is then stochastically below Binomial(m, alpha), so with
probability at least 1 - gamma, F <= q = the (1 - gamma) quantile of Binomial(m, alpha), and the true
certified accuracy is at least (m - q) / N. Reported beside the approximate accuracy, never instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

from dsmooth_core.certify import ABSTAIN
from dsmooth_core.experiments.records import Record
from dsmooth_core.noise import METHODS, method_class
from dsmooth_core.settings import TORCH_FORWARD

# radius fields of a record, and the metric each measures in (None: the method's own metric)
RADIUS_FIELDS: dict[str, str | None] = {"radius": None, "l2_inscribed": "l2", "l1_radius": "l1"}
CONFIG_FIELDS = (
    "dataset",
    "split",
    "model",
    "model_hash",
    "model_identity",  # None in records written before it was recorded
    "forward",  # the engine of the model's forward; "torch" in records written before it was recorded
    "profile_hash",
    "attack",
    "attack_config",
    "seed",
    "method",
    "sigma",
    "k",
    "n0",
    "n",
    "alpha",
)
ABLATION_PARAMS = ("k", "n", "alpha")
_ABSENT = {"forward": TORCH_FORWARD}  # what a record without the field was made with
_SYMBOLS = {"sigma": "σ", "k": "k", "n0": "n0", "n": "n", "alpha": "α", "seed": "seed"}
_METHOD_ORDER = {key: i for i, key in enumerate(METHODS)}


@dataclass(frozen=True)
class Group:
    """The records of one configuration (one curve), with a legend label naming what varies."""

    config: dict[str, Any]
    records: tuple[Record, ...]
    label: str

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def metric(self) -> str:
        return self.records[0]["metric"]

    @property
    def size(self) -> int:
        return len(self.records)


def _frozen(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


def _field(record: Record, name: str) -> Any:
    return record.get(name, _ABSENT.get(name))


def _config_key(record: Record, fields: Sequence[str] = CONFIG_FIELDS) -> tuple:
    return tuple(_frozen(_field(record, name)) for name in fields)


def _sort_key(config: dict[str, Any]) -> tuple:
    return (
        _METHOD_ORDER.get(config["method"], len(_METHOD_ORDER)),
        config["sigma"],
        config["k"] or 0,
        config["n"],
        config["alpha"],
        config["n0"],
        str(config["model"]),
        str(config["attack"]),
        config["seed"],
        str(config["profile_hash"]),
    )


def group_records(records: Iterable[Record]) -> list[Group]:
    """Records grouped by configuration, methods in the order DSmooth, RandSmooth, LSmooth."""
    buckets: dict[tuple, list[Record]] = {}
    for record in records:
        buckets.setdefault(_config_key(record), []).append(record)
    configs = [{name: _field(bucket[0], name) for name in CONFIG_FIELDS} for bucket in buckets.values()]
    varying = _varying(configs)
    groups = [
        Group(config, tuple(sorted(bucket, key=lambda r: r["idx"])), _label(config, varying))
        for config, bucket in zip(configs, buckets.values(), strict=True)
    ]
    return sorted(groups, key=lambda g: _sort_key(g.config))


def _varying(configs: list[dict[str, Any]]) -> set[str]:
    """Fields that take more than one value (k only among DSmooth's groups)."""
    out = set()
    for name in CONFIG_FIELDS:
        values = {_frozen(c.get(name)) for c in configs if name != "k" or method_class(c["method"]).needs_profile}
        if len(values) > 1:
            out.add(name)
    return out


def _label(config: dict[str, Any], varying: set[str]) -> str:
    cls = method_class(config["method"])
    parts = [f"{cls.name} ({cls.metric_short})"]
    if "model" in varying or "model_hash" in varying:
        parts.append(f"{config['model']}@{str(config['model_hash'])[:8]}")
    elif "model_identity" in varying:  # the same weights, another normalization, input size or program
        parts.append(f"{config['model']} (identity {str(config['model_identity'])[:8]})")
    if "attack" in varying or "attack_config" in varying:
        parts.append(f"attack {config['attack']} ({config['attack_config']['n_queries']} queries)")
    if "forward" in varying:
        parts.append(f"forward {config['forward']}")
    if "profile_hash" in varying:
        parts.append(f"profile {str(config['profile_hash'])[:8]}")
    for name, symbol in _SYMBOLS.items():
        if name in varying and config[name] is not None:
            parts.append(f"{symbol}={config[name]:g}")
    head, *rest = parts
    return head + (" " + ", ".join(rest) if rest else "")


def certified_counts(records: Sequence[Record], radii: Sequence[float], field: str = "radius") -> np.ndarray:
    """For each r: how many ``records`` have a correct prediction and ``record[field] >= r``."""
    values = np.array([r[field] if r["correct"] else -math.inf for r in records], dtype=float)
    return np.array([int((values >= radius).sum()) for radius in radii], dtype=int)


def certified_accuracy(records: Sequence[Record], radii: Sequence[float], field: str = "radius") -> np.ndarray:
    """For each r: the fraction of ``records`` with a correct prediction and ``record[field] >= r``."""
    return certified_counts(records, radii, field) / max(len(records), 1)


def high_probability_lower_bound(count: int, total: int, alpha: float, gamma: float) -> float:
    """A bound on the true certified accuracy that holds with probability >= 1 - gamma (see module doc).

    ``count`` of ``total`` images were certified (correct, radius large enough) at level ``alpha``.
    """
    if not 0 < gamma < 1:
        raise ValueError(f"gamma must lie strictly between 0 and 1, got {gamma}")
    if total == 0:
        return 0.0
    wrong = float(binom.ppf(1 - gamma, count, alpha)) if count else 0.0
    return max(count - wrong, 0.0) / total


def curve(group: Group, field: str = "radius", gamma: float | None = None) -> list[dict[str, float]]:
    """The exact step curve: certified accuracy at r = 0 and at every distinct finite radius.

    Accuracy is left-continuous and non-increasing in r, constant on (r_i, r_{i+1}] at its value at
    r_{i+1}, and 0 beyond the largest radius.
    """
    finite = sorted({r[field] for r in group.records if r["correct"] and math.isfinite(r[field]) and r[field] > 0})
    radii = [0.0, *finite]
    points = []
    for radius, count in zip(radii, certified_counts(group.records, radii, field), strict=True):
        point = {"radius": radius, "certified_accuracy": count / group.size}
        if gamma is not None:
            point["lower_bound"] = high_probability_lower_bound(int(count), group.size, group.config["alpha"], gamma)
        points.append(point)
    return points


def _describe(group: Group) -> dict[str, Any]:
    c = group.config
    return {
        "label": group.label,
        "method": method_class(c["method"]).name,
        "sigma": c["sigma"],
        "k": c["k"],
        "n0": c["n0"],
        "n": c["n"],
        "alpha": c["alpha"],
        "images": group.size,
    }


def curves_table(groups: Sequence[Group], field: str = "radius", gamma: float | None = None) -> list[dict]:
    """Every group's curve as rows (one per breakpoint), with the metric its radii are measured in."""
    rows = []
    for group in groups:
        metric = RADIUS_FIELDS[field] or group.metric
        for point in curve(group, field, gamma):
            rows.append({**_describe(group), "metric": metric, **point})
    return rows


def attack_table(groups: Sequence[Group], gamma: float | None = None) -> list[dict]:
    """Per group: accuracy and abstentions of the smoothed classifier, share certified against the attack,
    attack success, and the median perturbation and certified radius in the group's own metric."""
    rows = []
    for group in groups:
        records = group.records
        covered = sum(bool(r["covered"]) for r in records)
        row = {
            **_describe(group),
            "metric": group.metric,
            "accuracy": sum(bool(r["correct"]) for r in records) / group.size,
            "abstain_rate": sum(r["prediction"] == ABSTAIN for r in records) / group.size,
            "certified_against_attack": covered / group.size,
            "attack_success_rate": sum(bool(r["attack_success"]) for r in records) / group.size,
            "median_perturbation": float(np.median([r[f"pert_{group.metric}"] for r in records])),
            "median_certified_radius": _median([r["radius"] for r in records if r["correct"]]),
        }
        if gamma is not None:
            row["lower_bound"] = high_probability_lower_bound(covered, group.size, group.config["alpha"], gamma)
        rows.append(row)
    return rows


def certified_against_successful_attack(record: Record) -> bool | None:
    """The attack fooled the base model and the certificate still names the true label with the perturbation
    inside its region (own metric); None for a record written before successful attacks were recorded."""
    fooled = record.get("base_fooled")
    return None if fooled is None else bool(fooled and record["covered"])


def smoothed_at_attack(record: Record) -> str | None:
    """What the smoothed classifier answers at a successfully attacked image: "right", "fooled" or "abstains";
    None where the attack was not successful or the record predates the field."""
    if not record.get("base_fooled") or record.get("adv_smoothed_prediction") is None:
        return None
    prediction = record["adv_smoothed_prediction"]
    return "abstains" if prediction == ABSTAIN else "right" if prediction == record["label"] else "fooled"


SMOOTHED_AT_ATTACK = ("right", "fooled", "abstains")


def successful_attack_table(groups: Sequence[Group]) -> list[dict]:
    """Per group: successful attacks, how many of them are certified against, and what the smoothed
    classifier answers at the attacked images. Counts are over the records that know (``outcome_unknown``
    counts the others); None where no record of the group knows, a share NaN where it divides by zero."""
    rows = []
    for group in groups:
        known = [r for r in group.records if r.get("base_fooled") is not None]
        fooled = [r for r in known if r["base_fooled"]]
        answers = [smoothed_at_attack(r) for r in fooled]
        row: dict[str, Any] = {
            **_describe(group),
            "attack": group.config["attack"],
            "profile_hash": group.config["profile_hash"],
            "metric": group.metric,
            "outcome_unknown": group.size - len(known),
            "successful_attacks": len(fooled),
            "certified_against_successful_attack": sum(bool(r["covered"]) for r in fooled),
            **{f"smoothed_{answer}_at_attack": answers.count(answer) for answer in SMOOTHED_AT_ATTACK},
        }
        for name in ("certified_against_successful_attack", *(f"smoothed_{a}_at_attack" for a in SMOOTHED_AT_ATTACK)):
            row[f"{name}_share"] = row[name] / len(fooled) if fooled else math.nan
        if not known:
            row.update({name: None for name in row if name.startswith(("successful_", "certified_", "smoothed_"))})
        rows.append(row)
    return rows


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else math.nan


def time_table(groups: Sequence[Group]) -> list[dict]:
    """Mean and standard deviation of the seconds to certify one image (the paper's Tables 1-6)."""
    rows = []
    for group in groups:
        seconds = np.array([r["seconds"] for r in group.records], dtype=float)
        rows.append({**_describe(group), "mean_seconds": float(seconds.mean()), "std_seconds": float(seconds.std())})
    return rows


def summary_table(groups: Sequence[Group]) -> list[dict]:
    """One row per group with the numbers a reproduction report quotes: accuracy, abstentions, median
    radii of the correct certificates (own metric and inscribed l2), the attack comparison, the successful
    attacks (None: unknown, the records predate them), time."""
    rows = []
    tables = zip(groups, attack_table(groups), successful_attack_table(groups), time_table(groups), strict=True)
    for group, attack, successful, time in tables:
        correct = [r for r in group.records if r["correct"]]
        rows.append(
            {
                **_describe(group),
                "metric": group.metric,
                "accuracy": attack["accuracy"],
                "abstain_rate": attack["abstain_rate"],
                "median_certified_radius": attack["median_certified_radius"],
                "median_l2_inscribed": _median([r["l2_inscribed"] for r in correct]),
                "certified_against_attack": attack["certified_against_attack"],
                "median_perturbation": attack["median_perturbation"],
                "successful_attacks": successful["successful_attacks"],
                "certified_against_successful_attack_share": successful["certified_against_successful_attack_share"],
                "smoothed_fooled_at_attack_share": successful["smoothed_fooled_at_attack_share"],
                "mean_seconds": time["mean_seconds"],
            }
        )
    return rows


def ablation_groups(groups: Sequence[Group], param: str) -> list[Group]:
    """The groups of every family that differs only in ``param`` and holds at least two of its values."""
    if param not in ABLATION_PARAMS:
        raise ValueError(f"ablations are over {', '.join(ABLATION_PARAMS)}, not {param!r}")
    rest = tuple(name for name in CONFIG_FIELDS if name != param)
    families: dict[tuple, list[Group]] = {}
    for group in groups:
        if group.config[param] is not None:
            families.setdefault(_config_key(group.config, rest), []).append(group)
    return [g for family in families.values() if len({g.config[param] for g in family}) > 1 for g in family]
