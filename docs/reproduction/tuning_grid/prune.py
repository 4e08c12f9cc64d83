"""How many certificates ``prune`` saves in tuning, and that it keeps the choice (docs/MATH.md section 3).

Tunes the bundled paper profile's fit (det, k = 100, shrinkage reset to 0) with the default grid on
balanced training images outside that profile's calibration set, once certifying every eligible
setting in full and once with ``prune``, and writes both tuning records with the certificate counts
(counts, not seconds: they do not depend on the machine's load).

Usage: PYTHONPATH=. python docs/reproduction/tuning_grid/prune.py OUT.json [--images N] [--n0 N0] [--n N]
(the bundled model; DSMOOTH_DATA_DIR must hold CIFAR-10).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from dsmooth_core import bundled
from dsmooth_core.data import balanced_subset, load_cifar10
from dsmooth_core.models import DEFAULT_MODEL, load_model
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.tuning import tune_covariance


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=30, help="balanced training images (subset seed 7)")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--n0", type=int, default=20)
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args(argv)
    model = load_model(DEFAULT_MODEL)
    train = load_cifar10("train")
    paper = ThreatProfile.load(bundled.PAPER_PROFILE)
    paper.check_matches(model)
    fitted = paper.covariance.with_shrinkage(0.0)
    calibration = set(paper.indices)
    rows = [int(i) for i in balanced_subset(train.labels, 2 * args.images, seed=7) if int(i) not in calibration]
    rows = rows[: args.images]
    images, labels = train.tensor(rows), train.labels[rows].tolist()
    report = {"command": " ".join(sys.argv), "indices": rows, "runs": {}}
    for prune in (False, True):
        result = tune_covariance(
            model, fitted, images, labels, sigma=args.sigma, n0=args.n0, n=args.n, alpha=0.001, seed=0, prune=prune
        )
        report["runs"]["pruned" if prune else "full"] = {
            "certificates": sum(row.evaluated for row in result.rows),
            "record": result.to_dict(),
        }
    runs = report["runs"]
    report["same_choice"] = runs["full"]["record"]["choice"] == runs["pruned"]["record"]["choice"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"certificates: {runs['full']['certificates']} in full, {runs['pruned']['certificates']} pruned; "
        f"same choice: {report['same_choice']}"
    )
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main(sys.argv[1:]))
