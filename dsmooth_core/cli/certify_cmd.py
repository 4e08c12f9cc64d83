"""``certify``: certify a slice of a dataset, one TSV line per image, resumable.

The columns start with those of Cohen et al.'s ``certify.py`` (idx label predict radius correct
time) so their analysis scripts read the file, then add method, metric and p_lower.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import TextIO

import torch

from dsmooth_core.certify import certify
from dsmooth_core.cli.common import WEIGHTS_HELP, resolve_device
from dsmooth_core.cli.model_file_options import add_model_file_options, load_model_file_arg, require_cifar10
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.data import load_cifar10
from dsmooth_core.models import DEFAULT_MODEL, load_model
from dsmooth_core.noise import METHODS, make_noise

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time", "method", "metric", "p_lower")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certify", help="certify CIFAR-10 test images with one smoothing method")
    p.add_argument("--model", default=DEFAULT_MODEL, help="a registry name")
    p.add_argument("--untrained", action="store_true", help="untrained weights (offline demos and tests)")
    p.add_argument("--weights", type=Path, default=None, help=WEIGHTS_HELP)
    add_model_file_options(p)
    p.add_argument("--method", choices=METHODS, default="randsmooth")
    p.add_argument("--sigma", type=float, default=0.25)
    p.add_argument("--profile", type=Path, help="threat profile (covariance file), needed by dsmooth")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--skip", type=int, default=20, help="every skip-th image (the files are sorted by class)")
    p.add_argument("--max", type=int, default=-1, help="stop after this many images (-1: all)")
    p.add_argument("--n0", type=int, default=100)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--batch", type=int, default=400)
    p.add_argument("--seed", type=int, default=0, help="image i uses generator seed (seed, i)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, required=True, help="TSV file; existing indices are skipped")
    p.set_defaults(run=run)


def selected_indices(total: int, start: int, skip: int, limit: int) -> list[int]:
    if skip < 1:
        raise ValueError("--skip must be at least 1")
    indices = list(range(start, total, skip))
    return indices if limit < 0 else indices[:limit]


def finished_indices(path: Path) -> set[int]:
    return {int(key[0]) for key in finished_keys(path, ("idx",))}


def finished_keys(path: Path, columns: tuple[str, ...]) -> set[tuple[str, ...]]:
    """The values of ``columns`` in every line already written, so a rerun skips them."""
    if not path.exists():
        return set()
    with path.open(newline="") as f:
        return {tuple(row[c] for c in columns) for row in csv.DictReader(f, delimiter="\t")}


def open_tsv(path: Path, columns: tuple[str, ...]) -> TextIO:
    """Open ``path`` for appending lines, writing the header first when the file is new or empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = not path.exists() or path.stat().st_size == 0
    out = path.open("a")
    if fresh:
        write_row(out, columns)
    return out


def write_row(out: TextIO, row: tuple[object, ...]) -> None:
    """One tab-separated line, flushed so an interrupted run keeps every finished line."""
    print("\t".join(map(str, row)), file=out, flush=True)


def image_generator(seed: int, index: int) -> torch.Generator:
    """A generator per image, so a resumed run gives the lines an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 1_000_003 + index)


def run(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    covariance = LowRankCovariance.load(args.profile) if args.profile else None
    noise = make_noise(args.method, args.sigma, covariance)
    model = load_model_file_arg(args, device)
    if model is None:
        model = load_model(args.model, device=device, pretrained=not args.untrained, weights=args.weights)
    require_cifar10(model, "certify reads CIFAR-10 and")
    data = load_cifar10(args.split, args.data_dir)
    done = finished_indices(args.out)
    todo = [i for i in selected_indices(len(data.labels), args.start, args.skip, args.max) if i not in done]
    with open_tsv(args.out, COLUMNS) as out:
        for count, index in enumerate(todo, 1):
            x, label = data.tensor([index])[0], int(data.labels[index])
            cert = certify(model, x, noise, args.n0, args.n, args.alpha, args.batch, image_generator(args.seed, index))
            row = (
                index,
                label,
                cert.prediction,
                repr(cert.radius),
                int(cert.prediction == label),
                f"{cert.seconds:.4f}",
                cert.method,
                cert.metric,
                repr(cert.p_lower),
            )
            write_row(out, row)
            print(
                f"[{count}/{len(todo)}] idx {index}: predict {cert.prediction} radius {cert.radius:.4f} ({cert.metric})"
            )
    return 0
