"""``profile``: build a threat profile, DSmooth's covariance of real attack perturbations (MATH.md 3, 5).

The calibration images default to a balanced subset of the training split, so they never overlap
the test images a certificate is computed for. With ``--cache-dir`` a profile is built once per
model, images, attack, k and seed, and loaded from the cache afterwards.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from dsmooth_core.appendfile import check_writable_file
from dsmooth_core.cli.common import terminal_progress
from dsmooth_core.cli.threat_options import (
    add_attack_options,
    add_model_options,
    attack_config,
    describe_attack,
    load_cifar_model,
)
from dsmooth_core.data import balanced_subset, load_cifar10
from dsmooth_core.models import Normalized
from dsmooth_core.profiles import (
    ThreatProfile,
    build_profile,
    cached_profile_path,
    load_or_build_profile,
    profile_identity,
)
from dsmooth_core.progress import ProgressCallback

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
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, help="write the profile here (always builds it)")
    where.add_argument(
        "--cache-dir", type=Path, default=DEFAULT_CACHE, help="reuse or store the profile here (default: %(default)s)"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_writable_file(args.out)
    config = attack_config(args)
    model = load_cifar_model(args)
    data = load_cifar10(args.calibration_split, args.data_dir)
    indices = [int(i) for i in balanced_subset(data.labels, args.calibration_size, seed=args.seed)]
    settings = {
        "dataset": "cifar10",
        "split": args.calibration_split,
        "indices": indices,
        "attack": config,
        "k": args.k,
        "keep": args.keep,
        "seed": args.seed,
    }
    images, labels = data.tensor(indices), torch.from_numpy(data.labels[indices])
    progress = terminal_progress("attack iterations")
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always")
        profile, path = _build_or_load(args, model, images, labels, settings, progress)
    for note in notes:
        print(f"note: {note.message}", file=sys.stderr)
    print(summary(profile, args.k))
    print(f"profile: {path}")
    return 0


def _build_or_load(
    args: argparse.Namespace,
    model: Normalized,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: dict[str, Any],
    progress: ProgressCallback,
) -> tuple[ThreatProfile, Path]:
    """Build into --out, or go through the cache; either way say where the profile is."""
    config = settings["attack"]
    indices = settings["indices"]
    if args.out is not None:
        path = args.out
        print(f"attacking {len(indices)} {args.calibration_split} images: {describe_attack(config)}")
        profile = build_profile(model, images, labels, **settings, batch_size=args.batch, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        profile.save(path)
    else:
        identity = profile_identity(model.info.weights_hash, **settings)
        path = cached_profile_path(args.cache_dir, identity)
        action = "loading the cached profile of" if path.exists() else "attacking"
        print(f"{action} {len(indices)} {args.calibration_split} images: {describe_attack(config)}")
        profile = load_or_build_profile(
            model, images, labels, cache_dir=args.cache_dir, **settings, batch_size=args.batch, progress=progress
        )
    return profile, path


def summary(profile: ThreatProfile, requested_k: int) -> str:
    cov = profile.covariance
    floored = " (floored)" if cov.residual_floored else ""
    clamped = f", clamped from {requested_k}" if cov.k < requested_k else ""
    return "\n".join(
        (
            f"model {profile.model_name}, kept {profile.n_kept} of {profile.n_attacked} perturbations ({profile.keep})",
            f"k {cov.k} (rank {cov.rank}{clamped}), explained variance {cov.explained_variance:.1%}, "
            f"residual variance {cov.base_residual:.3g}{floored}",
            f"normalized eigenvalues: mu_min {cov.mu_min:.3g}, mu_max {cov.mu_max:.3g}",
        )
    )
