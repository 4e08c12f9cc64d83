"""``certify``: certify a slice of a dataset, one TSV line per image, resumable.

The columns start with those of Cohen et al.'s ``certify.py`` (idx label predict radius correct
time) so their analysis scripts read the file, then add method, metric and p_lower.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from dsmooth_core.appendfile import check_writable_file, locked_append
from dsmooth_core.certify import certify
from dsmooth_core.cli.common import WEIGHTS_HELP
from dsmooth_core.cli.engine_options import add_engine_arguments, ray_options
from dsmooth_core.cli.model_file_options import add_model_file_options
from dsmooth_core.cli.threat_options import load_cifar_model
from dsmooth_core.compiled import compiled_forward
from dsmooth_core.contract import check_input_shape, model_contract
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.data import ImageSet, load_cifar10
from dsmooth_core.device import generator_for, model_device
from dsmooth_core.errors import InputRefused
from dsmooth_core.models import DEFAULT_MODEL, Normalized
from dsmooth_core.noise import METHODS, SmoothingNoise, make_noise
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.scale import RayOptions
from dsmooth_core.scale.chunks import map_chunks

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
    add_selection_options(p)
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
    add_engine_arguments(p)
    p.set_defaults(run=run)


def add_selection_options(p: argparse.ArgumentParser) -> None:
    """Which images of the data set a command works through (shared with ``audit``)."""
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--skip", type=int, default=20, help="every skip-th image (the files are sorted by class)")
    p.add_argument("--max", type=int, default=-1, help="stop after this many images (-1: all)")


def selected_indices(total: int, start: int, skip: int, limit: int) -> list[int]:
    if skip < 1:
        raise ValueError("--skip must be at least 1")
    if start < 0:  # a negative index would silently pick an image from the end, recorded under a wrong idx
        raise InputRefused(f"--start must be 0 or more, got {start}")
    indices = list(range(start, total, skip))
    return indices if limit < 0 else indices[:limit]


def finished_keys(
    path: Path, columns: tuple[str, ...], key_columns: tuple[str, ...], kind: str
) -> set[tuple[str, ...]]:
    """The ``key_columns`` of every row already in ``path``; a file with other columns or rows is refused."""
    if not path.exists() or path.stat().st_size == 0:
        return set()
    positions = [columns.index(column) for column in key_columns]
    with path.open(newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header is None or tuple(header) != columns:
            raise InputRefused(f"--out {path} exists but is not a {kind} TSV (its first line is not the header)")
        done = set()
        for line, row in enumerate(reader, 2):
            if len(row) != len(columns) or not row[0].isdigit():
                raise InputRefused(f"--out {path}, line {line}, is not a {kind} row; write to another file")
            done.add(tuple(row[i] for i in positions))
    return done


@contextlib.contextmanager
def resumable_tsv(
    path: Path, columns: tuple[str, ...], key_columns: tuple[str, ...], kind: str
) -> Iterator[tuple[set[tuple[str, ...]], Callable[[tuple[object, ...]], None]]]:
    """The keys already in ``path`` and a row writer, under the file's lock (certify's and audit's TSVs).

    The header goes out with the first row, and an empty file this run created is removed when the
    run fails, so a refusal leaves nothing behind.
    """
    created = not path.exists()
    try:
        with locked_append(path) as out:
            done = finished_keys(path, columns, key_columns, kind)
            header_needed = [path.stat().st_size == 0]

            def write(row: tuple[object, ...]) -> None:
                if header_needed[0]:
                    print("\t".join(columns), file=out, flush=True)
                    header_needed[0] = False
                print("\t".join(map(str, row)), file=out, flush=True)  # flushed: an interrupt keeps whole rows

            yield done, write
    except BaseException:
        if created and path.is_file() and path.stat().st_size == 0:
            path.unlink()
        raise


def image_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator per image on the model's device, so a resumed run gives the lines an uninterrupted one would."""
    return generator_for(device, seed * 1_000_003 + index)


def run(args: argparse.Namespace) -> int:
    if args.compile and args.engine == "ray":  # before joining Ray: nothing is started for a refused command
        raise InputRefused("--compile compiles in this process; it cannot be sent to Ray workers (drop one)")
    options = ray_options(args)  # before any model or data is loaded, so a bad --address fails early
    check_writable_file(args.out)
    model = load_cifar_model(args, "certify reads CIFAR-10 and")
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
    covariance = profile_covariance(args, model, selected) if args.method == "dsmooth" else None
    noise = make_noise(args.method, args.sigma, covariance)
    # a bad model or noise is refused before any file; the per-image certify calls skip the repeat
    with model_contract(model, tuple(model.info.input_shape)):
        noise.check_shape(tuple(model.info.input_shape))
        noise.check_finite_draws(tuple(model.info.input_shape), model_device(model))
        _certify_into(args, model, data, noise, selected, options)
    return 0


def _certify_into(
    args: argparse.Namespace,
    model: Normalized,
    data: ImageSet,
    noise: SmoothingNoise,
    selected: list[int],
    options: RayOptions | None,
) -> None:
    """Append one row per image not yet in ``--out``, holding the file's lock throughout."""
    draws = Draws(args.n0, args.n, args.alpha, args.batch, args.seed)
    with resumable_tsv(args.out, COLUMNS, ("idx",), "certify") as (done, write):
        todo = [i for i in selected if (str(i),) not in done]
        started = time.perf_counter()
        for count, row in enumerate(_rows(model, data, todo, noise, draws, options), 1):
            write(row)
            per_image = (time.perf_counter() - started) / count
            print(
                f"[{count}/{len(todo)}] idx {row[0]}: predict {row[2]} radius {float(row[3]):.4f} ({row[7]}); "
                f"{per_image:.2f} s/image, ETA {(len(todo) - count) * per_image:.0f} s"
            )


def profile_covariance(args: argparse.Namespace, model: Normalized, indices: list[int]) -> LowRankCovariance | None:
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


@dataclass(frozen=True)
class Draws:
    """How each image is certified: sample sizes, level, batch and the run seed its generator comes from."""

    n0: int
    n: int
    alpha: float
    batch: int
    seed: int


def certify_row(
    model: torch.nn.Module, index: int, x: torch.Tensor, label: int, noise: SmoothingNoise, draws: Draws
) -> tuple:
    """One image's TSV row; the same in any process, its noise drawn from (seed, index) alone."""
    generator = image_generator(draws.seed, index, model_device(model))
    cert = certify(model, x, noise, draws.n0, draws.n, draws.alpha, draws.batch, generator)
    return (
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


def certify_rows(
    chunk: list[tuple[int, torch.Tensor, int]], *, model: torch.nn.Module, noise: SmoothingNoise, draws: Draws
) -> list[tuple]:
    """In a Ray worker (the model already on the worker's device): the rows of one chunk of images."""
    return [certify_row(model, index, x, label, noise, draws) for index, x, label in chunk]


def _rows(
    model: torch.nn.Module,
    data: ImageSet,
    todo: list[int],
    noise: SmoothingNoise,
    draws: Draws,
    options: RayOptions | None,
) -> Iterator[tuple]:
    """The rows of ``todo``, in order in this process, or as Ray's chunks finish."""
    if options is None:
        for index in todo:
            yield certify_row(model, index, data.tensor([index])[0], int(data.labels[index]), noise, draws)
        return
    chunks = (
        [(i, data.tensor([i])[0], int(data.labels[i])) for i in todo[start : start + options.chunk_size]]
        for start in range(0, len(todo), options.chunk_size)
    )
    shared = {"model": model, "noise": noise, "draws": draws}
    with contextlib.closing(map_chunks(certify_rows, shared, chunks, options)) as results:
        for _, rows in results:
            yield from rows
