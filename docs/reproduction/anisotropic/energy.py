"""Does a threat profile describe the perturbations of images it was not fitted on?

For "What anisotropic smoothing needs" (docs/REPRODUCTION.md). DSmooth's metric can only shrink an
attack perturbation if the perturbation lies along the profile's top directions. This attacks a
class-balanced set of *test* images with the profile's own threat and reports, for the perturbations
that fooled the model (the ones a profile is fitted to), the share of their centred energy in the
profile's top-k directions, beside the share the fit explains on its own calibration perturbations
and the share a random k-dimensional subspace would hold (k/d), and the median ratio of each
perturbation's Mahalanobis size (in the profile's St) to its l2 size.

Usage: python docs/reproduction/anisotropic/energy.py PRESET PROFILE.pt [PROFILE.pt ...] [--images N]
(the bundled model; DSMOOTH_DATA_DIR must hold CIFAR-10). Besides the printed table, the numbers go
to ``energy.json`` beside this script (``--out``), one entry per preset, which the page's table is
checked against (tests/test_doc_numbers.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from dsmooth_core.attacks import PRESETS, square_then_fgsm
from dsmooth_core.data import balanced_subset, load_cifar10
from dsmooth_core.models import DEFAULT_MODEL, load_model
from dsmooth_core.profiles import ThreatProfile

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", choices=sorted(PRESETS))
    parser.add_argument("profiles", nargs="+", type=Path)
    parser.add_argument("--images", type=int, default=100, help="balanced test images (subset seed 1)")
    parser.add_argument("--queries", type=int, default=1000, help="Square's budget (the section uses 1,000)")
    parser.add_argument("--out", type=Path, default=HERE / "energy.json", help="JSON updated with this preset's rows")
    args = parser.parse_args(argv)
    model = load_model(DEFAULT_MODEL)
    test = load_cifar10("test")
    indices = balanced_subset(test.labels, args.images, seed=1)
    config = dataclasses.replace(PRESETS[args.preset], n_queries=args.queries)
    result = square_then_fgsm(
        model,
        test.tensor(indices),
        torch.from_numpy(test.labels[indices]),
        config,
        generator=torch.Generator().manual_seed(0),
    )
    fooled = result.perturbation[result.success].to(torch.float64).flatten(1)
    print(f"{args.preset}: {len(fooled)} of {len(indices)} test images fooled")
    print("| profile | k | energy in top k: calibration | test | random subspace | median Mahalanobis / l2 |")
    print("|---|---|---|---|---|---|")
    rows = []
    for path in args.profiles:
        profile = ThreatProfile.load(path)
        profile.check_matches(model)
        cov = profile.covariance
        centred = fooled - cov.mean.to(torch.float64).flatten()
        inside = (centred @ cov.eigenvectors.to(torch.float64)).square().sum()
        share = float(inside / centred.square().sum())
        ratios = torch.tensor([float(cov.mahalanobis(d.reshape(cov.shape))) / float(d.norm()) for d in fooled])
        row = {
            "file": path.name,
            "profile_hash": cov.content_hash(),
            "k": cov.k,
            "calibration_share": cov.explained_variance,
            "test_share": share,
            "random_share": cov.k / cov.dim,
            "median_mahalanobis_over_l2": float(ratios.median()),
        }
        rows.append(row)
        print(
            f"| {path.name} | {cov.k} | {row['calibration_share']:.1%} | {share:.1%} | {row['random_share']:.1%} "
            f"| {row['median_mahalanobis_over_l2']:.3f} |"
        )
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    results[args.preset] = {"images": len(indices), "fooled": len(fooled), "queries": args.queries, "profiles": rows}
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
