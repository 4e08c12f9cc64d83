"""``attack``: run the threat (Square then FGSM) on a slice of CIFAR-10 and save what it did.

The file is a ``torch.save`` dict of CPU tensors plus plain metadata, readable with
``torch.load(path, weights_only=True)``, so perturbations can be inspected or fitted later without
attacking again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from dsmooth_core.appendfile import check_writable_file
from dsmooth_core.attacks import AttackConfig, AttackResult, square_then_fgsm
from dsmooth_core.cli.certify_cmd import selected_indices
from dsmooth_core.cli.common import terminal_progress
from dsmooth_core.cli.threat_options import (
    add_attack_options,
    add_model_options,
    attack_config,
    describe_attack,
    load_cifar_model,
)
from dsmooth_core.data import balanced_subset, load_cifar10
from dsmooth_core.device import generator_for
from dsmooth_core.models import Normalized

FORMAT = "dsmooth-attack"
# Per-image tensors of AttackResult that the file keeps (the images themselves are in the data set).
RESULT_FIELDS = ("perturbation", "labels", "success", "queries", "clean_pred", "adv_pred", "linf", "l2", "l1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="attack CIFAR-10 images with Square then FGSM and save the perturbations")
    add_model_options(p)
    p.add_argument("--data-dir", type=Path, default=None, help="default: $DSMOOTH_DATA_DIR or ./data")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--skip", type=int, default=20, help="every skip-th image (the files are sorted by class)")
    p.add_argument("--max", type=int, default=100, help="stop after this many images (-1: all)")
    p.add_argument("--subset", type=int, help="a class-balanced random subset of this size instead of a slice")
    p.add_argument("--seed", type=int, default=0, help="seeds the attack and the --subset draw")
    add_attack_options(p)
    p.add_argument("--batch", type=int, default=None, help="images attacked at once (default: all)")
    p.add_argument("--out", type=Path, required=True, help="where the results go (.pt)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_writable_file(args.out)
    config = attack_config(args)
    model = load_cifar_model(args)
    data = load_cifar10(args.split, args.data_dir)
    if args.subset is not None:
        indices = [int(i) for i in balanced_subset(data.labels, args.subset, seed=args.seed)]
    else:
        indices = selected_indices(len(data), args.start, args.skip, args.max)
    if not indices:
        raise ValueError("no images selected")
    print(f"attacking {len(indices)} {args.split} images with {model.info.name}: {describe_attack(config)}")
    result = square_then_fgsm(
        model,
        data.tensor(indices),
        torch.from_numpy(data.labels[indices]),
        config,
        generator=generator_for(model, args.seed),
        progress=terminal_progress("attack iterations"),
        batch_size=args.batch,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = attack_record(result, indices, model, args.split, config, args.seed)
    record["metadata"]["argv"] = list(getattr(args, "argv", []))  # main() records the command line
    torch.save(record, args.out)
    print(summary(result))
    print(f"saved to {args.out}", file=sys.stderr)
    return 0


def attack_record(
    result: AttackResult, indices: list[int], model: Normalized, split: str, config: AttackConfig, seed: int
) -> dict[str, Any]:
    """Everything needed to reuse the perturbations and to know what produced them."""
    return {
        "format": FORMAT,
        "indices": torch.tensor(indices, dtype=torch.int64),
        **{name: getattr(result, name).detach().cpu() for name in RESULT_FIELDS},
        "metadata": {
            "model_name": model.info.name,
            "model_hash": model.info.weights_hash,
            "model_identity": model.info.identity,
            "dataset": "cifar10",
            "split": split,
            "attack": config.to_dict(),
            "seed": seed,
        },
    }


def summary(result: AttackResult) -> str:
    fooled = result.success
    queries = result.queries.float()
    fooled_queries = f"{queries[fooled].median():.0f}" if fooled.any() else "-"
    return "\n".join(
        (
            f"clean accuracy {(result.clean_pred == result.labels).float().mean():.1%}, "
            f"attack success {fooled.float().mean():.1%} ({int(fooled.sum())}/{len(fooled)})",
            f"median queries {queries.median():.0f} (fooled images: {fooled_queries})",
            f"mean norms: l_inf {result.linf.mean():.4f}, l2 {result.l2.mean():.4f}, l1 {result.l1.mean():.2f}",
        )
    )
