"""Rebuild the threat profiles of the paper's evaluation (docs/REPRODUCTION.md, "DSmooth's profiles") and describe them.

The five profiles of the first study (2.4 MB each, up to 25 MB at k = 1,000) are not in the
repository; the records name them by content hash. Each is rebuilt here as its command built it
(the same balanced training images, attack seed and rank) and described in ``paper_profiles.json``:
mu_min, mu_max, trace(St) / d and the calibration counts that page quotes. A rebuilt profile's
eigenvalues equal the archived one's to float rounding (docs/BUNDLED_MODEL.md), which can change
the content hash; the output says whether the hash matched and records mu_min as the records imply
it (a DSmooth record's inscribed l2 radius is R sqrt(mu_min)), so the two can be compared.

Usage (DSMOOTH_DATA_DIR must hold CIFAR-10; a few minutes on one thread):
  python docs/reproduction/describe_profiles.py [--out docs/reproduction/paper_profiles.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from dsmooth_core.attacks import PRESETS
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.data import load_cifar10
from dsmooth_core.experiments.records import load_records
from dsmooth_core.experiments.setup import load_experiment_model
from dsmooth_core.profiles import Calibration, calibrate

HERE = Path(__file__).resolve().parent
RECORDS = HERE / "records"
WEIGHTS = {"bundled": HERE / "resnet20_bundled_v1.pt", "recipe": HERE / "resnet20_paper_recipe.pt"}
# name: (model, threat, calibration images, rank k, the records made with it); seed 0 throughout
PROFILES = {
    "bundled_paper": ("bundled", "paper", 1000, 100, "bundled_paper.jsonl.gz"),
    "bundled_conventional": ("bundled", "conventional", 300, 100, "bundled_conventional.jsonl.gz"),
    "recipe_paper": ("recipe", "paper", 1000, 100, "recipe_paper.jsonl.gz"),
    "recipe_conventional": ("recipe", "conventional", 300, 100, "recipe_conventional.jsonl.gz"),
    "ablation_k": ("bundled", "paper", 1200, 1000, "ablation_k.jsonl.gz"),
}


def trace_per_dim(cov: LowRankCovariance) -> float:
    """trace(St) / d: the noise energy of DSmooth relative to isotropic noise at the same sigma."""
    total = float(cov.eigenvalues.sum()) + (cov.dim - cov.k) * cov.residual_variance
    return total / (cov.dim * cov.normalizer)


def describe(cov: LowRankCovariance) -> dict:
    return {"mu_min": cov.mu_min, "mu_max": cov.mu_max, "trace_per_dim": trace_per_dim(cov)}


def records_mu_min(records: list[dict], k: int) -> float:
    """mu_min as DSmooth's rank-k records imply it: (inscribed l2 / Mahalanobis radius)^2."""
    ratios = [
        (r["l2_inscribed"] / r["radius"]) ** 2
        for r in records
        if r["method"] == "dsmooth" and r["k"] == k and r["radius"] > 0 and math.isfinite(r["radius"])
    ]
    return sum(ratios) / len(ratios)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE / "paper_profiles.json")
    args = parser.parse_args(argv)
    train = load_cifar10("train")
    out = {}
    for name, (model_name, threat, size, k, records_file) in PROFILES.items():
        model = load_experiment_model("bundled-resnet20", "cpu", weights=WEIGHTS[model_name])
        attack = dataclasses.replace(PRESETS[threat], n_queries=1000)
        profile = calibrate(model, train, Calibration(size=size, attack=attack, k=k, subset_seed=0, seed=0))
        records = load_records([RECORDS / records_file])
        archived = {r["profile_hash"] for r in records}
        cov = profile.covariance
        row = {
            "model": model_name,
            "threat": threat,
            "calibration_images": profile.n_attacked,
            "kept_perturbations": profile.n_kept,
            "k": cov.k,
            "content_hash": cov.content_hash(),
            "records_profile_hash": sorted(archived),
            "hash_matches_records": archived == {cov.content_hash()},
            **describe(cov),
            "records_mu_min": records_mu_min(records, k),
            "ranks": {str(r): describe(cov.with_rank(r)) for r in (10, 100, 1000) if r <= cov.k},
        }
        out[name] = row
        print(name, json.dumps({key: v for key, v in row.items() if key != "ranks"}), flush=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
