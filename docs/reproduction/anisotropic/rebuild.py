"""Rebuild the profiles of "What anisotropic smoothing needs" (docs/REPRODUCTION.md) and record their tuning.

``run.sh`` writes eight profiles (7 MB) that stay out of the repository; ``profiles.json`` names them
by content hash, and only two ship with the app. This rebuilds the others the way ``run.sh``'s
``profile`` commands did (same calibration images, attack seed and fit) and checks each against the
hash in ``profiles.json``, so a file that differs is refused, not used. It does not rerun the whole
18-setting tuning (18 x 100 images x 300 forward passes per threat and sigma): the tuned profiles are
fitted and given the knobs ``profiles.json`` records, and the tuning images are certified only
under the settings the tuning table of docs/REPRODUCTION.md quotes: the choice and the paper's
setting (det, k = 100, no shrinkage); ``--corners`` adds the other two corners of the grid (trace at
k = 100 without shrinkage; the other normalization at k = 10, shrinkage 0.9). Every setting of a
tuning sees the same noise per image (``tune_covariance``), so a setting's count does not depend on
which others are tried; for the reachable threat at sigma 0.25 the bundled profile carries the full
table, which tests/test_doc_numbers.py compares with these rows.

Usage (DSMOOTH_DATA_DIR must hold CIFAR-10; the conventional threat's two attacks take the longest):
  python docs/reproduction/anisotropic/rebuild.py WORKDIR [--threats ...] [--corners] [--tuning-out tuning.json]
WORKDIR/profiles/<threat>_{paper,tuned_0.25,tuned_0.5}.pt are written for ``energy.py``, and
<threat>_fit.pt, the untuned k = 100 fit of the 400 fitting images. A rerun loads the paper-setting
profile and the fit from WORKDIR instead of attacking again (they are checked all the same).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from dsmooth_core.attacks import PRESETS
from dsmooth_core.bundled import PROFILE
from dsmooth_core.data import load_cifar10
from dsmooth_core.models import DEFAULT_MODEL, load_model
from dsmooth_core.profiles import Calibration, ThreatProfile, build_profile
from dsmooth_core.settings import ProfileShape
from dsmooth_core.tuning import TuningGrid, split_calibration, tune_covariance

HERE = Path(__file__).resolve().parent
THREATS = ("reachable", "conventional", "paper")
SIGMAS = (0.25, 0.5)
PAPER_SETTING = ProfileShape("det", 100, 0.0)
CORNERS = tuple(ProfileShape(norm, k, g) for k, g in ((100, 0.0), (10, 0.9)) for norm in ("det", "trace"))
# run.sh's profile commands: 500 balanced training images, seed 0, k = 100; tuning share 0.2, n = 200
SIZE, K, SEED, SHARE, TUNE_N = 500, 100, 0, 0.2, 200


def _expected(profiles: dict, threat: str, name: str) -> str:
    """The content hash profiles.json gives the file ``name`` of ``threat``."""
    for key, row in profiles.items():
        if row["threat"] == threat and name in row["files"]:
            return key
    raise KeyError(f"profiles.json names no {name} for {threat}")


def _checked(profile: ThreatProfile, expected: str, label: str) -> ThreatProfile:
    got = profile.covariance.content_hash()
    if got != expected:
        raise SystemExit(f"{label}: rebuilt content hash {got[:12]} differs from profiles.json's {expected[:12]}")
    print(f"{label}: content hash {got[:12]} as in profiles.json", flush=True)
    return profile


def _count(model, fitted, images, labels, shape: ProfileShape, sigma: float) -> dict:
    """One setting's tuning row, exactly as ``tune_covariance`` scores it inside the full grid."""
    grid = TuningGrid(
        normalizations=(shape.normalization,), ranks=(shape.k,), shrinkages=(shape.shrinkage,), min_axis_ratio=1.0
    )
    result = tune_covariance(model, fitted, images, labels, sigma=sigma, grid=grid, n=TUNE_N, seed=SEED)
    row = dataclasses.asdict(result.choice)
    row["eligible"] = row["axis_ratio"] >= TuningGrid().min_axis_ratio  # run.sh's rule, not this one-row grid's
    return row


def _attacked(path: Path, build) -> ThreatProfile:
    """The profile saved at ``path`` by an earlier run, or ``build()`` saved there."""
    if path.exists():
        return ThreatProfile.load(path)
    profile = build()
    profile.save(path)
    return profile


def _bundled_fit(fitting: list[int], held_out: list[int]) -> tuple[ThreatProfile, dict]:
    """The reachable threat's fit as the app's tuned profile carries it, and that profile's tuning record.

    That profile keeps k = 10 directions of the 400-image fit, its residual and its trace, with the
    shrinkage and normalization as parameters, so every setting of rank <= 10 is made from it exactly;
    the settings of higher rank are the ones its own table (at sigma 0.25) records.
    """
    bundled = ThreatProfile.load(PROFILE)
    record = bundled.tuning
    assert record["fitting_indices"] == fitting and record["tuning_indices"] == held_out
    return dataclasses.replace(bundled, indices=tuple(fitting), tuning=None), record


def rebuild(threat: str, model, train, profiles: dict, out: Path, corners: bool, attack_reachable: bool) -> dict:
    attack = PRESETS[threat]
    if threat == "paper":  # run.sh cuts the paper preset's 5,000 queries to 1,000
        attack = dataclasses.replace(attack, n_queries=1000)
    calibration = Calibration(size=SIZE, attack=attack, k=K, subset_seed=SEED, seed=SEED)
    indices = calibration.indices(train.labels)
    paper_file = out / f"{threat}_paper.pt"
    if threat == "reachable":  # ships with the app
        paper = ThreatProfile.load(PROFILE.with_name("resnet20_cifar10_profile_paper.pt"))
        paper.save(paper_file)
    else:
        images, labels = train.tensor(indices), torch.from_numpy(train.labels[indices])
        paper = _attacked(paper_file, lambda: build_profile(model, images, labels, calibration, indices=indices))
    _checked(paper, _expected(profiles, threat, paper_file.name), paper_file.name)

    fitting, held_out = split_calibration(indices, SHARE, SEED)
    recorded = None  # a tuning table already on record for this fit
    if threat == "reachable" and not attack_reachable and not (out / "reachable_fit.pt").exists():
        fitted, recorded = _bundled_fit(fitting, held_out)
    else:
        fitted = _attacked(
            out / f"{threat}_fit.pt",
            lambda: build_profile(
                model, train.tensor(fitting), torch.from_numpy(train.labels[fitting]), calibration, indices=fitting
            ),
        )
    images, labels = train.tensor(held_out), train.labels[held_out].tolist()
    rows = {}
    for sigma in SIGMAS:
        name = f"{threat}_tuned_{sigma:g}.pt"
        expected = _expected(profiles, threat, name)
        knobs = profiles[expected]
        shape = ProfileShape(knobs["normalization"], knobs["k"], knobs["shrinkage"])
        tuned = _checked(dataclasses.replace(fitted, covariance=shape.apply(fitted.covariance)), expected, name)
        settings = list(dict.fromkeys((PAPER_SETTING, shape, *(CORNERS if corners else ()))))
        table = []
        for setting in settings:
            if recorded is not None and recorded["sigma"] == sigma:
                (row,) = [
                    r for r in recorded["table"] if ProfileShape(r["normalization"], r["k"], r["shrinkage"]) == setting
                ]
            elif setting.k <= fitted.covariance.k:
                row = _count(model, fitted.covariance, images, labels, setting, sigma)
            else:
                print(f"{name}: {setting} needs the k = 100 fit (--attack-reachable); not counted", flush=True)
                continue
            table.append(row)
        settings = [ProfileShape(r["normalization"], r["k"], r["shrinkage"]) for r in table]
        choice = table[settings.index(shape)]
        record = {"fitting_indices": fitting, "tuning_indices": held_out, "sigma": sigma, "choice": choice,
                  "table": table}  # fmt: skip
        dataclasses.replace(tuned, indices=tuple(sorted(indices)), tuning=record).save(out / name)
        rows[f"{sigma:g}"] = {"profile_hash": expected, "choice": choice, "counted": table}
        print(
            f"{name}: certified "
            + ", ".join(
                f"{c.normalization} {c.k} {c.shrinkage:g}: {r['certified']}"
                for c, r in zip(settings, table, strict=True)
            ),
            flush=True,
        )
    return rows


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--threats", nargs="+", choices=THREATS, default=list(THREATS))
    parser.add_argument("--corners", action="store_true", help="count all four corners of the grid")
    parser.add_argument(
        "--attack-reachable",
        action="store_true",
        help="refit the reachable threat too (else the app's tuned profile stands in for its k <= 10 settings)",
    )
    parser.add_argument("--tuning-out", type=Path, default=HERE / "tuning.json")
    args = parser.parse_args(argv)
    out = args.workdir / "profiles"
    out.mkdir(parents=True, exist_ok=True)
    profiles = json.loads((HERE / "profiles.json").read_text())
    model = load_model(DEFAULT_MODEL)
    train = load_cifar10("train")
    tuning = json.loads(args.tuning_out.read_text()) if args.tuning_out.exists() else {}
    for threat in args.threats:
        tuning[threat] = rebuild(threat, model, train, profiles, out, args.corners, args.attack_reachable)
        args.tuning_out.write_text(json.dumps(tuning, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
