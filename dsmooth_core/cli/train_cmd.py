"""``train``: noise-augmented training of a CIFAR-10 model, with a model card beside the weights."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from dsmooth_core.attacks import PRESETS, square_then_fgsm
from dsmooth_core.cli.common import git_commit, resolve_device, terminal_progress
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.data import balanced_subset, load_cifar10
from dsmooth_core.models import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    ModelInfo,
    Normalized,
    build_architecture,
    state_dict_hash,
)
from dsmooth_core.models.registry import load_state_dict_file
from dsmooth_core.training import (
    NoiseMixture,
    TrainConfig,
    accuracy,
    noise_label,
    parse_noise,
    to_float,
    train,
)

DATA_NOTE = (
    "CIFAR-10 as re-encoded quality-75 JPEG (about 6 grey levels from the original, PSNR about 30 dB); "
    "accuracy is a few points below what the original files give."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="noise-augmented training with a mixture of smoothing noises")
    p.add_argument("--arch", default="resnet20")
    p.add_argument("--out", type=Path, required=True, help="where the state dict goes (.pt); card beside it")
    p.add_argument("--data-dir", type=Path, default=None, help="default: $DSMOOTH_DATA_DIR or ./data")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--noise",
        nargs="+",
        default=["none", "randsmooth:0.25"],
        help="mixture components: none, randsmooth:S, lsmooth:S, dsmooth:S (one is drawn per image)",
    )
    p.add_argument("--profile", type=Path, help="threat profile (covariance file) for dsmooth noise")
    p.add_argument("--init", type=Path, help="start from these weights (a state dict of --arch)")
    p.add_argument("--adv-fraction", type=float, default=0.0, help="share of each batch that is adversarial")
    p.add_argument("--adv-pool", type=int, default=2000, help="training images attacked for that share")
    p.add_argument("--adv-preset", choices=sorted(PRESETS), default="paper")
    p.add_argument("--train-size", type=int, default=None, help="a balanced subset of the training set")
    p.add_argument("--eval-size", type=int, default=1000, help="balanced test images for the card")
    p.add_argument("--device", default="auto")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    covariance = LowRankCovariance.load(args.profile) if args.profile else None
    components = [parse_noise(spec, covariance) for spec in args.noise]
    if not 0 <= args.adv_fraction < 1:
        raise ValueError("--adv-fraction must lie in [0, 1)")
    train_set, test_set = load_cifar10("train", args.data_dir), load_cifar10("test", args.data_dir)
    net = build_architecture(args.arch)
    if args.init:
        load_state_dict_file(net, args.init, args.arch)  # checksums, finite values and keys checked
    info = ModelInfo(
        name=args.out.stem,
        dataset="cifar10",
        input_shape=(3, 32, 32),
        class_names=tuple(train_set.classes),
        source="trained",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    )
    model = Normalized(net, info).to(device, memory_format=torch.channels_last)

    rows = balanced_subset(train_set.labels, args.train_size, seed=args.seed) if args.train_size else None
    images = torch.from_numpy(train_set.images if rows is None else train_set.images[rows])
    labels = torch.from_numpy(train_set.labels if rows is None else train_set.labels[rows])
    pool = _adversarial_pool(model, images, labels, args) if args.adv_fraction > 0 else None
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        adversarial_fraction=args.adv_fraction,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = args.out.with_suffix(".ckpt")
    seconds = train(model, images, labels, NoiseMixture(components), config, checkpoint, adversarial=pool)

    torch.save(net.state_dict(), args.out)
    card = _model_card(args, net, model, test_set, components, covariance, seconds, len(images))
    args.out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    checkpoint.unlink(missing_ok=True)
    print(json.dumps({k: card[k] for k in ("clean_accuracy", "noisy_accuracy", "wall_seconds")}, indent=2))
    return 0


def _adversarial_pool(model, images, labels, args) -> tuple[torch.Tensor, torch.Tensor]:
    """Square + FGSM examples of a random share of the training images, made once before training."""
    g = torch.Generator().manual_seed(args.seed + 1)
    pick = torch.randperm(len(images), generator=g)[: args.adv_pool]
    model.eval()
    result = square_then_fgsm(
        model,
        to_float(images[pick]),
        labels[pick],
        PRESETS[args.adv_preset],
        generator=g,
        progress=terminal_progress("attacking the adversarial pool"),
        batch_size=500,
    )
    print(f"adversarial pool: {int(result.success.sum())}/{len(pick)} fooled", file=sys.stderr)
    return result.adversarial.cpu(), result.labels.cpu()


def _model_card(args, net, model, test_set, components, covariance, seconds, train_count) -> dict:
    rows = balanced_subset(test_set.labels, args.eval_size, seed=0)
    images = to_float(torch.from_numpy(test_set.images[rows]))
    labels = torch.from_numpy(test_set.labels[rows])
    g = torch.Generator().manual_seed(0)
    model.eval()
    return {
        "name": args.out.stem,
        "architecture": args.arch,
        "dataset": "cifar10",
        "data_note": DATA_NOTE,
        "normalization": {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)},
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "train_size": train_count,
        "noise_mixture": list(args.noise),
        "profile": None if covariance is None else {"path": str(args.profile), **covariance.summary()},
        "init": str(args.init) if args.init else None,
        "adversarial": {"fraction": args.adv_fraction, "pool": args.adv_pool, "preset": args.adv_preset}
        if args.adv_fraction
        else None,
        "wall_seconds": round(seconds, 1),
        "eval": {"split": "test", "size": len(rows), "subset": "balanced_subset(seed=0)"},
        "clean_accuracy": accuracy(model, images, labels, None, g),
        "noisy_accuracy": {
            noise_label(noise): accuracy(model, images, labels, noise, g) for noise in components if noise
        },
        "weights_sha256": state_dict_hash(net),
        "command": shlex.join(["python", "-m", "dsmooth_core", *args.argv]),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
