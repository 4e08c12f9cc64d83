"""The tables of "Where anisotropic smoothing can win" (docs/REPRODUCTION.md), from committed outputs.

- ``describe PROFILE.pt ...`` writes ``profiles.json``: each profile's content hash (the records carry
  it), threat, role (the paper's setting or tuned at a sigma), the knobs of its St, its spectrum and,
  for a tuned one, the whole tuning table with the settings the axis-ratio floor excluded. The
  profiles stay out of the repository (about 1.2 MB each); the records name them by hash.
- ``results RECORDS.jsonl.gz ...`` writes ``results.json`` (per threat, sigma and smoothing: clean
  certified accuracy, successful attacks, certified against them, the smoothed answer at them; and
  the paired sign tests of each DSmooth against RandSmooth, Holm-adjusted over the whole family)
  and prints the markdown tables of the page. ``tests/test_structured_study.py`` checks that the
  page's tables equal what this prints from the committed files.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from dsmooth_core.experiments.analysis import certified_against_successful_attack, group_records, summary_table
from dsmooth_core.experiments.paired import holm, paired_comparison
from dsmooth_core.experiments.records import load_records
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.tuning import axis_ratio

HERE = Path(__file__).resolve().parent
THREATS = ("patch", "lowfreq", "nonuniform", "reachable")
SMOOTHINGS = ("DSmooth paper", "DSmooth tuned", "RandSmooth", "LSmooth")


def describe(paths: list[Path]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for path in sorted(paths):
        profile = ThreatProfile.load(path)
        cov = profile.covariance
        threat, _, role = path.stem.partition("_")
        tuning = profile.tuning
        key = cov.content_hash()
        if key in rows:  # tunings at two sigmas that chose the same knobs on the same fit: one St
            rows[key]["files"].append(path.name)
            rows[key]["tuned_at_sigma"].append(tuning["sigma"])
            continue
        rows[key] = {
            "files": [path.name],
            "threat": threat,
            "role": "paper" if role == "paper" else "tuned",
            "tuned_at_sigma": [tuning["sigma"]] if tuning else [],
            "normalization": cov.normalization,
            "k": cov.k,
            "shrinkage": cov.shrinkage,
            "axis_ratio": axis_ratio(cov),
            "mu_min": cov.mu_min,
            "mu_max": cov.mu_max,
            "trace_over_d": float(cov.eigenvalues.sum() + (cov.dim - cov.k) * cov.residual_variance)
            / (cov.normalizer * cov.dim),
            "explained_variance": cov.explained_variance,
            "calibration_images": profile.n_attacked,
            "kept_perturbations": profile.n_kept,
            "tuning_table": tuning["table"] if tuning else None,
        }
    return rows


def _smoothing(record: dict[str, Any], profiles: dict[str, Any]) -> str:
    if record["method"] != "dsmooth":
        return {"randsmooth": "RandSmooth", "lsmooth": "LSmooth"}[record["method"]]
    return f"DSmooth {profiles[record['profile_hash']]['role']}"


def results(paths: list[Path], profiles: dict[str, Any]) -> dict[str, Any]:
    """Per (threat, sigma, smoothing) the figures of the page, over the images every smoothing has."""
    cells: dict[tuple[str, float, str], list[dict[str, Any]]] = defaultdict(list)
    for record in load_records(paths):
        cells[(record["attack"], record["sigma"], _smoothing(record, profiles))].append(record)
    rows, pairs = [], []
    for threat in THREATS:
        for sigma in sorted({key[1] for key in cells if key[0] == threat}):
            present = {name: cells[(threat, sigma, name)] for name in SMOOTHINGS if cells.get((threat, sigma, name))}
            common = set.intersection(*({r["idx"] for r in recs} for recs in present.values()))
            present = {name: [r for r in recs if r["idx"] in common] for name, recs in present.items()}
            for name, recs in present.items():
                (group,) = group_records(recs)
                (summary,) = summary_table([group])
                fooled = [r for r in recs if r["base_fooled"]]
                answers = [r["adv_smoothed_prediction"] for r in fooled]
                rows.append(
                    {
                        "threat": threat,
                        "sigma": sigma,
                        "smoothing": name,
                        "metric": summary["metric"],
                        "images": len(recs),
                        "certified_accuracy": summary["accuracy"],
                        "median_radius": summary["median_certified_radius"],
                        "median_inscribed_l2": summary["median_l2_inscribed"],
                        "median_perturbation": summary["median_perturbation"],
                        "successful_attacks": len(fooled),
                        "certified_against_successful_attack": sum(bool(r["covered"]) for r in fooled),
                        "smoothed_fooled_at_attack": sum(
                            a not in (-1, r["label"]) for a, r in zip(answers, fooled, strict=True)
                        ),
                        "smoothed_abstains_at_attack": sum(a == -1 for a in answers),
                        # why a successful attack is (not) covered: is the clean certificate right, and
                        # how its radius compares with the attack's perturbation, in the same metric
                        "successful_certified_right": sum(bool(r["correct"]) for r in fooled),
                        "median_radius_at_successful": _median([r["radius"] for r in fooled if r["correct"]]),
                        "median_perturbation_at_successful": _median([_own_size(r) for r in fooled]),
                    }
                )
            for name in ("DSmooth paper", "DSmooth tuned"):
                if name in present and "RandSmooth" in present:
                    counts = paired_comparison(
                        present[name], present["RandSmooth"], certified_against_successful_attack
                    )
                    accuracy = {n: sum(r["correct"] for r in present[n]) / len(common) for n in (name, "RandSmooth")}
                    pairs.append(
                        {
                            "threat": threat,
                            "sigma": sigma,
                            "a": name,
                            "b": "RandSmooth",
                            "images": len(common),
                            "both": counts.both,
                            "only_a": counts.only_a,
                            "only_b": counts.only_b,
                            "p_value": counts.p_value,
                            "accuracy_gap_points": 100 * (accuracy[name] - accuracy["RandSmooth"]),
                        }
                    )
    for pair, adjusted in zip(pairs, holm([p["p_value"] for p in pairs]), strict=True):
        pair["p_holm"] = adjusted
    return {"rows": rows, "pairs": pairs}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _own_size(record: dict[str, Any]) -> float:
    """The attack's perturbation in the record's own metric (l2, l1 or the record's Mahalanobis)."""
    return record[f"pert_{record['metric']}"]


def _share(count: int, total: int) -> str:
    return f"{count} ({count / total:.0%})" if total else "0"


def _number(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3g}"


def markdown(data: dict[str, Any], profiles: dict[str, Any]) -> str:
    lines = [
        "| threat | sigma | smoothing (metric) | images | certified at r = 0 | median R (own metric) "
        "| median inscribed l2 | median attack perturbation (own metric) | successful attacks "
        "| certified against a successful attack | successful attacks that fool the smoothed classifier "
        "| ... it abstains |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        n = r["successful_attacks"]
        lines.append(
            f"| {r['threat']} | {r['sigma']:g} | {r['smoothing']} ({r['metric']}) | {r['images']} "
            f"| {r['certified_accuracy']:.1%} | {_number(r['median_radius'])} | {_number(r['median_inscribed_l2'])} "
            f"| {_number(r['median_perturbation'])} | {n} | {_share(r['certified_against_successful_attack'], n)} "
            f"| {_share(r['smoothed_fooled_at_attack'], n)} | {_share(r['smoothed_abstains_at_attack'], n)} |"
        )
    lines += [
        "",
        "| threat | sigma | smoothing (metric) | successful attacks | certified right at the clean image "
        "| median R of those | median perturbation of the successful attacks |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        n = r["successful_attacks"]
        lines.append(
            f"| {r['threat']} | {r['sigma']:g} | {r['smoothing']} ({r['metric']}) | {n} "
            f"| {_share(r['successful_certified_right'], n)} | {_number(r['median_radius_at_successful'])} "
            f"| {_number(r['median_perturbation_at_successful'])} |"
        )
    lines += [
        "",
        "| threat | sigma | DSmooth vs RandSmooth | both | DSmooth only | RandSmooth only | sign test p "
        "| Holm-adjusted p | accuracy gap (points) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in data["pairs"]:
        lines.append(
            f"| {p['threat']} | {p['sigma']:g} | {p['a']} | {p['both']} | {p['only_a']} | {p['only_b']} "
            f"| {p['p_value']:.2g} | {p['p_holm']:.2g} | {p['accuracy_gap_points']:+.1f} |"
        )
    return "\n".join(lines)


def profile_markdown(profiles: dict[str, Any]) -> str:
    lines = [
        "| threat | profile | normalization, k, shrinkage | axis ratio | mu_min | mu_max | trace(St) / d "
        "| kept / attacked | settings excluded by the floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = {t: i for i, t in enumerate(THREATS)}
    for p in sorted(profiles.values(), key=lambda p: (order[p["threat"]], p["role"], p["tuned_at_sigma"])):
        sigmas = " and ".join(f"{s:g}" for s in p["tuned_at_sigma"])
        role = "paper's setting" if p["role"] == "paper" else f"tuned at sigma {sigmas}"
        excluded = sum(not row["eligible"] for row in p["tuning_table"]) if p["tuning_table"] else None
        total = len(p["tuning_table"]) if p["tuning_table"] else None
        lines.append(
            f"| {p['threat']} | {role} | {p['normalization']}, {p['k']}, {p['shrinkage']:.3g} "
            f"| {p['axis_ratio']:.3g} | {p['mu_min']:.3g} | {p['mu_max']:.3g} | {p['trace_over_d']:.3g} "
            f"| {p['kept_perturbations']} / {p['calibration_images']} "
            f"| {'-' if excluded is None else f'{excluded} of {total}'} |"
        )
    return "\n".join(lines)


def energy_markdown(energy: dict[str, Any], profiles: dict[str, Any]) -> str:
    """energy.py's output (``energy.json``): does each profile describe held-out test perturbations?"""
    lines = [
        "| threat | test images fooled | profile | k | energy in top k: calibration | test | random k-subspace "
        "| median Mahalanobis / l2 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for threat in THREATS:
        if threat not in energy:
            continue
        entry, seen = energy[threat], set()
        for row in entry["profiles"]:
            if row["profile_hash"] in seen:  # the same St tuned at both sigmas
                continue
            first = not seen
            seen.add(row["profile_hash"])
            described = profiles[row["profile_hash"]]
            sigmas = " and ".join(f"{s:g}" for s in described["tuned_at_sigma"])
            role = "paper's setting" if described["role"] == "paper" else f"tuned at sigma {sigmas}"
            head = f"{threat} | {entry['fooled']} / {entry['images']}" if first else " | "
            lines.append(
                f"| {head} | {role} | {row['k']} | {row['calibration_share']:.1%} "
                f"| {row['test_share']:.1%} | {row['random_share']:.1%} | {row['median_mahalanobis_over_l2']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("describe", "results", "show"))
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    if args.command == "describe":
        (HERE / "profiles.json").write_text(json.dumps(describe(args.files), indent=1) + "\n")
    profiles = json.loads((HERE / "profiles.json").read_text())
    if args.command == "results":
        (HERE / "results.json").write_text(json.dumps(results(args.files, profiles), indent=1) + "\n")
    print(profile_markdown(profiles))
    if (HERE / "energy.json").exists():
        print()
        print(energy_markdown(json.loads((HERE / "energy.json").read_text()), profiles))
    if (HERE / "results.json").exists():
        print()
        print(markdown(json.loads((HERE / "results.json").read_text()), profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
