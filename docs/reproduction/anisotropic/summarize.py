"""The tables of "What anisotropic smoothing needs" (docs/REPRODUCTION.md), from the archived records.

Two steps, both printed on that page:

- ``describe PROFILE.pt ...`` writes ``profiles.json``: each profile's content hash (the records
  carry it), threat, the knobs of its St and, for a tuned one, the tuning's choice. The profiles
  themselves stay out of the repository (7 MB); the records name them by hash.
- ``table RECORDS.jsonl.gz ...`` prints, per threat and sigma, one row per smoothing (DSmooth named
  by its profile's setting) and, for each tuned DSmooth, a paired comparison with RandSmooth on
  "certified against the attack": images only one of the two certifies, and a two-sided sign test.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from scipy.stats import binomtest

from dsmooth_core.experiments.analysis import group_records, summary_table
from dsmooth_core.experiments.records import load_records
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.tuning import axis_ratio

HERE = Path(__file__).resolve().parent
THREAT_ORDER = ("reachable", "conventional", "paper")  # the one certificates can reach first


def describe(paths: list[Path], out: Path) -> None:
    rows = {}
    for path in paths:
        profile = ThreatProfile.load(path)
        cov = profile.covariance
        threat = path.stem.partition("_")[0]
        key = cov.content_hash()
        if key in rows:  # tunings at two sigmas that chose the same knobs on the same fit: one St
            rows[key]["files"].append(path.name)
            rows[key]["tuned_at_sigma"].append(profile.tuning["sigma"])
            continue
        rows[key] = {
            "files": [path.name],
            "threat": threat,
            "setting": "tuned" if profile.tuning else "paper",
            "tuned_at_sigma": [profile.tuning["sigma"]] if profile.tuning else [],
            "normalization": cov.normalization,
            "k": cov.k,
            "shrinkage": cov.shrinkage,
            "axis_ratio": round(axis_ratio(cov), 2),
            "mu_max": round(cov.mu_max, 3),
            "mu_min": round(cov.mu_min, 4),
            "calibration_images": len(profile.indices),
            "kept_perturbations": profile.n_kept,
        }
    out.write_text(json.dumps(rows, indent=1) + "\n")


def _name(config: dict, profiles: dict) -> str:
    if config["method"] != "dsmooth":
        return {"randsmooth": "RandSmooth", "lsmooth": "LSmooth"}[config["method"]]
    p = profiles[config["profile_hash"]]
    knobs = f"{p['normalization']}, k = {p['k']}, shrinkage {p['shrinkage']:g}; axis ratio {p['axis_ratio']:g}"
    return f"DSmooth {p['setting']} ({knobs})"


def table(paths: list[Path], profiles: dict) -> str:
    records = load_records(paths)
    by_threat: dict[str, list] = defaultdict(list)
    for record in records:
        by_threat[record["attack"]].append(record)
    lines = []
    for threat, rows in sorted(by_threat.items(), key=lambda item: THREAT_ORDER.index(item[0])):
        lines += [f"### Threat `{threat}`", ""]
        lines.append(
            "| sigma | smoothing | images | certified at r = 0 | abstains | median R of correct (metric) "
            "| median inscribed l2 | median attack perturbation (metric) | certified against the attack | s / image |"
        )
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        groups = group_records(rows)
        summaries = sorted(
            zip(groups, summary_table(groups), strict=True),
            key=lambda gs: (gs[0].config["sigma"], _name(gs[0].config, profiles)),
        )
        for group, s in summaries:
            lines.append(
                f"| {s['sigma']:g} | {_name(group.config, profiles)} | {s['images']} | {s['accuracy']:.1%} "
                f"| {s['abstain_rate']:.1%} | {s['median_certified_radius']:.3g} ({s['metric']}) "
                f"| {s['median_l2_inscribed']:.3g} | {s['median_perturbation']:.3g} "
                f"| {s['certified_against_attack']:.1%} | {s['mean_seconds']:.2f} |"
            )
        lines += ["", *_paired(rows, profiles), ""]
    return "\n".join(lines)


def _paired(rows: list[dict], profiles: dict) -> list[str]:
    """Tuned DSmooth against RandSmooth, image by image, at each sigma: who certifies against the attack."""
    covered = {(r["method"], r["profile_hash"], r["sigma"], r["idx"]): bool(r["covered"]) for r in rows}
    correct = {(r["method"], r["profile_hash"], r["sigma"], r["idx"]): bool(r["correct"]) for r in rows}
    out = [
        "| sigma | tuned DSmooth vs RandSmooth | both | DSmooth only | RandSmooth only | sign test p |",
        "|---|---|---|---|---|---|",
    ]
    tuned = sorted({(r["profile_hash"], r["sigma"]) for r in rows if r["method"] == "dsmooth"}, key=lambda t: t[1])
    for profile_hash, sigma in tuned:
        if profiles[profile_hash]["setting"] != "tuned":
            continue
        rs = {k[3]: v for k, v in covered.items() if k[0] == "randsmooth" and k[2] == sigma}
        rs_correct = {k[3]: v for k, v in correct.items() if k[0] == "randsmooth" and k[2] == sigma}
        if not rs:
            continue
        for label, table_ in (("certified against the attack", covered), ("certified at r = 0", correct)):
            ds = {k[3]: v for k, v in table_.items() if k[1] == profile_hash and k[2] == sigma}
            other = rs if table_ is covered else rs_correct
            assert ds.keys() == other.keys(), "the two methods were certified on other images"
            both = sum(ds[i] and other[i] for i in ds)
            only_ds = sum(ds[i] and not other[i] for i in ds)
            only_rs = sum(other[i] and not ds[i] for i in ds)
            p = binomtest(only_ds, only_ds + only_rs).pvalue if only_ds + only_rs else 1.0
            out.append(f"| {sigma:g} | {label} | {both} | {only_ds} | {only_rs} | {p:.2g} |")
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("describe")
    d.add_argument("profiles", nargs="+", type=Path)
    d.add_argument("--out", type=Path, default=HERE / "profiles.json")
    t = sub.add_parser("table")
    t.add_argument("records", nargs="+", type=Path)
    t.add_argument("--profiles", type=Path, default=HERE / "profiles.json")
    args = parser.parse_args(argv)
    if args.command == "describe":
        describe(args.profiles, args.out)
    else:
        print(table(args.records, json.loads(args.profiles.read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
