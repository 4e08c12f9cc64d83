"""``profile``: build a threat profile, DSmooth's covariance of real attack perturbations (docs/MATH.md 3, 5).

The calibration images default to a balanced subset of the training split, so they never overlap
the test images a certificate is computed for. With ``--cache-dir`` a profile is built once per
model, images, attack, k and seed, and loaded from the cache afterwards. A tuned profile's table
(every setting tried, the excluded ones with their axis ratio) is printed and, with
``--tuning-table``, written as JSON for docs to quote.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from dsmooth_core.appendfile import check_writable_file
from dsmooth_core.cli.common import terminal_progress
from dsmooth_core.cli.threat_options import (
    add_attack_options,
    add_model_options,
    attack_config,
    describe_attack,
    load_cifar_model,
)
from dsmooth_core.data import load_cifar10
from dsmooth_core.profiles import Calibration, ThreatProfile, Tuning, calibrate
from dsmooth_core.tuning import TuningGrid, write_tuning_record

DEFAULT_CACHE = Path("data") / "profiles"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profile", help="fit the threat covariance to Square + FGSM perturbations of CIFAR-10")
    add_model_options(p)
    p.add_argument("--data-dir", type=Path, default=None, help="default: $DSMOOTH_DATA_DIR or ./data")
    p.add_argument("--calibration-split", choices=("train", "test"), default="train")
    p.add_argument("--calibration-size", type=int, default=1000, help="a class-balanced subset of this size")
    p.add_argument("--seed", type=int, default=0, help="seeds the subset draw and the attack")
    add_attack_options(p)
    p.add_argument("--k", type=int, default=100, help="directions kept (clamped to the rank of the data)")
    p.add_argument(
        "--keep",
        choices=("successful", "nonzero"),
        default="successful",
        help="fit the perturbations of fooled images only, or every non-zero one",
    )
    p.add_argument("--batch", type=int, default=None, help="images attacked at once (default: all)")
    tune = p.add_argument_group("tuning DSmooth's knobs on held-out calibration images (docs/MATH.md 3)")
    tune.add_argument("--tune-sigma", type=float, default=None, help="tune at this sigma (default: no tuning)")
    tune.add_argument("--tune-share", type=float, default=0.2, help="share of the calibration images held out")
    tune.add_argument("--tune-n", type=int, default=500, help="estimation samples per tuning certificate")
    tune.add_argument(
        "--tune-n0", type=int, default=Tuning.n0, help="selection samples per tuning certificate (default: %(default)s)"
    )
    tune.add_argument(
        "--tune-prune",
        action="store_true",
        help="certify the most isotropic settings first and stop a setting once it cannot win: the same choice "
        "for fewer forwards, but the stopped settings' counts cover fewer images",
    )
    tune.add_argument("--normalizations", nargs="+", choices=("det", "trace"), default=["det", "trace"])
    grid = TuningGrid()
    tune.add_argument(
        "--ranks", nargs="+", type=int, default=list(grid.ranks), help="ranks tried, at most --k (default: %(default)s)"
    )
    tune.add_argument("--shrinkages", nargs="+", type=float, default=list(grid.shrinkages), help="default: %(default)s")
    tune.add_argument(
        "--min-axis-ratio",
        type=float,
        default=grid.min_axis_ratio,
        help="sqrt(mu_max/mu_min) a setting must reach; settings below it are listed, not certified "
        "(default: %(default)s)",
    )
    tune.add_argument(
        "--shrink-to-floor",
        action=argparse.BooleanOptionalAction,
        default=grid.shrink_to_floor,
        help="also try, per normalization and rank, the largest shrinkage whose axis ratio reaches the floor",
    )
    tune.add_argument(
        "--tuning-table", type=Path, default=None, help="write the tuning record (every setting tried) to this .json"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="write the profile here (always builds it)")
    where.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="reuse or store the profile here (default: %(default)s)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.k < 1:  # checked before the attack, which would otherwise run for nothing
        raise ValueError(f"--k is the number of directions the profile keeps, at least 1; got {args.k}")
    if args.out is not None:
        check_writable_file(args.out)
    if args.tune_sigma is not None and min(args.tune_n0, args.tune_n) < 1:  # refused before the attack, not after
        raise ValueError(f"--tune-n0 and --tune-n count draws, at least 1 each; got {args.tune_n0} and {args.tune_n}")
    if args.tuning_table is not None:
        if args.tune_sigma is None:
            raise ValueError("--tuning-table writes the tuning's table: give --tune-sigma too")
        if args.tuning_table.suffix != ".json":
            raise ValueError(f"--tuning-table is written as JSON; give a name ending in .json, not {args.tuning_table}")
        check_writable_file(args.tuning_table, "--tuning-table")
    attack = attack_config(args)
    model = load_cifar_model(args)
    data = load_cifar10(args.calibration_split, args.data_dir)
    calibration = Calibration(
        size=args.calibration_size,
        attack=attack,
        k=args.k,
        split=args.calibration_split,
        subset_seed=args.seed,
        keep=args.keep,
        seed=args.seed,
        tuning=_tuning(args),
    )
    where = (
        args.out if args.out is not None else calibration.cache_path(args.cache_dir, model.info.identity, data.labels)
    )
    action = "loading the cached profile of" if args.out is None and where.exists() else "attacking"
    print(f"{action} {calibration.size} {calibration.split} images: {describe_attack(calibration.attack)}")
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        profile = calibrate(
            model,
            data,
            calibration,
            cache_dir=None if args.out is not None else args.cache_dir,
            batch_size=args.batch,
            progress=terminal_progress("attack iterations" if calibration.tuning is None else "attack, then tuning"),
        )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        profile.save(args.out)
    for note in notes:
        print(f"note: {note.message}", file=sys.stderr)
    print(summary(profile, args.k))
    print(f"profile: {where}")
    if args.tuning_table is not None and profile.tuning is not None:
        write_tuning_record(profile.tuning, args.tuning_table)
        print(f"tuning table: {args.tuning_table}")
    return 0


def _tuning(args: argparse.Namespace) -> Tuning | None:
    if args.tune_sigma is None:
        return None
    grid = TuningGrid(
        normalizations=tuple(args.normalizations),
        ranks=tuple(args.ranks),
        shrinkages=tuple(args.shrinkages),
        min_axis_ratio=args.min_axis_ratio,
        shrink_to_floor=args.shrink_to_floor,
    )
    return Tuning(
        sigma=args.tune_sigma,
        share=args.tune_share,
        grid=grid,
        n0=args.tune_n0,
        n=args.tune_n,
        seed=args.seed,
        prune=args.tune_prune,
    )


def tuning_table(profile: ThreatProfile) -> str:
    """The tuning table as text: every setting tried, the chosen row marked, the excluded ones with their ratio."""
    if profile.tuning is None:
        return ""
    record = profile.tuning
    floor = record.get("grid", {}).get("min_axis_ratio")  # absent from records written before it was kept
    lines = [
        f"tuned at sigma {record['sigma']:g} on {len(record['tuning_indices'])} held-out calibration images "
        f"(fitted on {len(record['fitting_indices'])}); certified at r = 0 with n0 {record['n0']}, n {record['n']}:",
        "  normalization   k  shrinkage  axis ratio  certified  abstained",
    ]
    for row in record["table"]:
        mark = "*" if row == record["choice"] else (" " if row["eligible"] else "-")
        head = f"{mark} {row['normalization']:>13} {row['k']:>3} {row['shrinkage']:>10.3g} {row['axis_ratio']:>11.3g}"
        evaluated = row.get("evaluated", row["images"])  # absent from records written before pruning
        if row["certified"] is None:
            lines.append(f"{head}  not certified")
        elif evaluated < row["images"]:
            lines.append(f"{head} {row['certified']:>6}/{evaluated:<3} {row['abstained']:>9}  stopped: cannot win")
        else:
            lines.append(f"{head} {row['certified']:>6}/{row['images']:<3} {row['abstained']:>9}")
    excluded = sum(not row["eligible"] for row in record["table"])
    below = "too close to isotropic" if floor is None else f"axis ratio below {floor:g}"
    lines.append(f"  (* chosen; - excluded, {below}: {excluded} of {len(record['table'])} settings)")
    return "\n".join(lines)


def summary(profile: ThreatProfile, requested_k: int) -> str:
    cov = profile.covariance
    floored = " (floored)" if cov.residual_floored else ""
    # a tuned profile's k is the tuning's choice (its table follows), not a clamp
    clamped = f", clamped from {requested_k}" if cov.k < requested_k and profile.tuning is None else ""
    return "\n".join(
        (
            f"model {profile.model_name}, kept {profile.n_kept} of {profile.n_attacked} perturbations ({profile.keep})",
            f"k {cov.k} (rank {cov.rank}{clamped}), explained variance {cov.explained_variance:.1%}, "
            f"residual variance {cov.base_residual:.3g}{floored}",
            f"{cov.normalization}-normalized St: mu_min {cov.mu_min:.3g}, mu_max {cov.mu_max:.3g}, "
            f"shrinkage {cov.shrinkage:g}",
            tuning_table(profile),
        )
    ).rstrip()
