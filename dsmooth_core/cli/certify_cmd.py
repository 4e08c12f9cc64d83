"""``certify``: certify a slice of a dataset, one TSV line per image, resumable.

The columns start with those of Cohen et al.'s ``certify.py`` (idx label predict radius correct
time) so their analysis scripts read the file, then add method, metric and p_lower.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

from dsmooth_core.appendfile import check_writable_file, locked_append
from dsmooth_core.certify import certify
from dsmooth_core.cli.common import WEIGHTS_HELP, resolve_device
from dsmooth_core.compiled import compiled_forward
from dsmooth_core.contract import check_input_shape, model_contract
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.data import ImageSet, load_cifar10
from dsmooth_core.device import generator_for, model_device
from dsmooth_core.errors import InputRefused
from dsmooth_core.models import DEFAULT_MODEL, Normalized, load_model
from dsmooth_core.noise import METHODS, SmoothingNoise, make_noise
from dsmooth_core.profiles import ThreatProfile

COLUMNS = ("idx", "label", "predict", "radius", "correct", "time", "method", "metric", "p_lower")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certify", help="certify CIFAR-10 test images with one smoothing method")
    p.add_argument("--model", default=DEFAULT_MODEL, help="a registry name")
    p.add_argument("--untrained", action="store_true", help="untrained weights (offline demos and tests)")
    p.add_argument("--weights", type=Path, default=None, help=WEIGHTS_HELP)
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
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the forward for full batches (costs a minute or more up front; pays off over many images)",
    )
    p.add_argument("--out", type=Path, required=True, help="TSV file; existing indices are skipped")
    p.set_defaults(run=run)


def selected_indices(total: int, start: int, skip: int, limit: int) -> list[int]:
    if skip < 1:
        raise ValueError("--skip must be at least 1")
    if start < 0:  # a negative index would silently pick an image from the end, recorded under a wrong idx
        raise InputRefused(f"--start must be 0 or more, got {start}")
    indices = list(range(start, total, skip))
    return indices if limit < 0 else indices[:limit]


def finished_indices(path: Path) -> set[int]:
    """The indices a previous run wrote to ``path``; a file that is not a certify TSV is refused."""
    if not path.exists() or path.stat().st_size == 0:
        return set()
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or tuple(header) != COLUMNS:
            raise InputRefused(f"--out {path} exists but is not a certify TSV (its first line is not the header)")
        done = set()
        for line, row in enumerate(reader, 2):
            if len(row) != len(COLUMNS) or not row[0].isdigit():
                raise InputRefused(f"--out {path}, line {line}, is not a certify row; write to another file")
            done.add(int(row[0]))
    return done


def image_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator per image on the model's device, so a resumed run gives the lines an uninterrupted one would."""
    return generator_for(device, seed * 1_000_003 + index)


def run(args: argparse.Namespace) -> int:
    check_writable_file(args.out)
    device = resolve_device(args.device)
    model = load_model(args.model, device=device, pretrained=not args.untrained, weights=args.weights)
    if args.compile:
        model = compiled_forward(model, args.batch)
    data = load_cifar10(args.split, args.data_dir)
    if len(data):
        check_input_shape(model, tuple(data.tensor([0]).shape[1:]))
    if len(data.classes) != model.info.num_classes:  # the correct column compares labels with predictions
        raise InputRefused(
            f"the data set has {len(data.classes)} classes and model {model.info.name!r} {model.info.num_classes}"
        )
    selected = selected_indices(len(data.labels), args.start, args.skip, args.max)
    covariance = _profile_covariance(args, model, selected) if args.method == "dsmooth" else None
    noise = make_noise(args.method, args.sigma, covariance)
    with model_contract(model, tuple(model.info.input_shape)):  # refuse a bad model or noise before any file
        noise.check_shape(tuple(model.info.input_shape))
        noise.check_finite_draws(tuple(model.info.input_shape), model_device(model))
    created = not args.out.exists()
    try:
        _certify_into(args, model, data, noise, selected)
    except BaseException:
        if created and args.out.is_file() and args.out.stat().st_size == 0:
            args.out.unlink()  # leave no empty file behind a refusal
        raise
    return 0


def _certify_into(
    args: argparse.Namespace, model: Normalized, data: ImageSet, noise: SmoothingNoise, selected: list[int]
) -> None:
    """Append one row per image not yet in ``--out``, holding the file's lock throughout."""
    with locked_append(args.out) as out:
        done = finished_indices(args.out)
        todo = [i for i in selected if i not in done]
        header_needed = args.out.stat().st_size == 0
        for count, index in enumerate(todo, 1):
            x, label = data.tensor([index])[0], int(data.labels[index])
            generator = image_generator(args.seed, index, model_device(model))
            cert = certify(model, x, noise, args.n0, args.n, args.alpha, args.batch, generator)
            if header_needed:  # written with the first row, so a refusal leaves the file empty
                print("\t".join(COLUMNS), file=out, flush=True)
                header_needed = False
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
            print("\t".join(map(str, row)), file=out, flush=True)
            print(
                f"[{count}/{len(todo)}] idx {index}: predict {cert.prediction} radius {cert.radius:.4f} ({cert.metric})"
            )


def _profile_covariance(args: argparse.Namespace, model: Normalized, indices: list[int]) -> LowRankCovariance | None:
    """The profile's covariance, refused (as ``experiment run`` and the app refuse it) when it was built on
    another model or on the images to certify. A bare covariance file carries no provenance to check."""
    if args.profile is None:
        return None
    covariance = LowRankCovariance.load(args.profile)
    if covariance.metadata.get("kind") != "threat-profile":
        print(
            f"note: {args.profile} is a bare covariance without provenance; whether it was fitted on this model "
            "and on other images than these cannot be checked",
            file=sys.stderr,
        )
        if tuple(covariance.shape) != tuple(model.info.input_shape):
            raise InputRefused(
                f"--profile {args.profile} is for inputs of shape {covariance.shape}, "
                f"the model takes {model.info.input_shape}"
            )
        return covariance
    profile = ThreatProfile.load(args.profile)
    profile.check_matches(model)
    profile.check_disjoint("cifar10", args.split, indices)
    return profile.covariance
