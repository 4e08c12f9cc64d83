"""``certify``: certify a slice of a dataset, one TSV line per image, resumable.

The columns start with those of Cohen et al.'s ``certify.py`` (idx label predict radius correct
time) so their analysis scripts read the file, then add method, metric and p_lower.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from dsmooth_core.appendfile import check_writable_file
from dsmooth_core.certify import certification_checks, certify
from dsmooth_core.cli.common import WEIGHTS_HELP
from dsmooth_core.cli.engine_options import add_engine_arguments, ray_options
from dsmooth_core.cli.model_file_options import add_model_file_options
from dsmooth_core.cli.result_files import forward_settings, model_settings, resumable_tsv, run_facts
from dsmooth_core.cli.threat_options import load_cifar_model
from dsmooth_core.compiled import compiled_forward
from dsmooth_core.contract import check_input_shape
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.data import ImageSet, load_cifar10
from dsmooth_core.device import generator_for, model_device
from dsmooth_core.errors import InputRefused
from dsmooth_core.models import DEFAULT_MODEL, Normalized
from dsmooth_core.noise import METHODS, SmoothingNoise
from dsmooth_core.profiles import ThreatProfile, check_usable
from dsmooth_core.scale import RayOptions
from dsmooth_core.scale.chunks import map_chunks
from dsmooth_core.seeds import certify_command_seed
from dsmooth_core.settings import CertifySettings

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
        help="torch.compile the forward for full batches (tens of seconds up front; pays off over many images)",
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
    """Every ``skip``-th index from ``start``, at most ``limit`` (-1: all); refused when none is selected."""
    if skip < 1:
        raise InputRefused("--skip must be at least 1")
    if start < 0:  # a negative index would silently pick an image from the end, recorded under a wrong idx
        raise InputRefused(f"--start must be 0 or more, got {start}")
    if start >= total:
        raise InputRefused(f"--start {start} is past the data: it has {total} images (indices 0 to {total - 1})")
    if limit == 0 or limit < -1:
        raise InputRefused(f"--max must be at least 1 (or -1 for all), got {limit}")
    indices = list(range(start, total, skip))
    return indices if limit < 0 else indices[:limit]


def image_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator per image on the model's device, so a resumed run gives the lines an uninterrupted one would."""
    return generator_for(device, certify_command_seed(seed, index))


def certify_settings(args: argparse.Namespace) -> CertifySettings:
    """The command's settings, built and validated once from its arguments."""
    return CertifySettings(args.method, args.sigma, args.n0, args.n, args.alpha, args.batch, args.seed)


def file_settings(
    settings: CertifySettings, model: Normalized, covariance: LowRankCovariance | None, split: str
) -> dict[str, object]:
    """What shaped the rows of a certify TSV, by option name: its side file, compared on resume."""
    return {
        **{f"--{name}": value for name, value in settings.identity().items()},
        "--split": split,
        "--profile": None if covariance is None else covariance.content_hash(),
        "model": model_settings(model.info),
        **forward_settings(model),
    }


def run(args: argparse.Namespace) -> int:
    settings = certify_settings(args)  # every value checked before anything is loaded
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
    covariance = profile_covariance(args, model, selected) if settings.method == "dsmooth" else None
    noise = settings.noise(covariance)
    shape = tuple(model.info.input_shape)
    # the model and the noise are checked once here, before any file; the per-image certify calls skip the repeat
    with certification_checks(model, noise, shape):
        tsv = file_settings(settings, model, covariance, args.split)
        about = run_facts(model, args)
        with resumable_tsv(args.out, COLUMNS, ("idx",), "certify", tsv, about) as (done, write):
            todo = [i for i in selected if (str(i),) not in done]
            started = time.perf_counter()
            for count, row in enumerate(_rows(model, data, todo, noise, settings, options), 1):
                write(row)
                per_image = (time.perf_counter() - started) / count
                print(
                    f"[{count}/{len(todo)}] idx {row[0]}: predict {row[2]} radius {float(row[3]):.4f} ({row[7]}); "
                    f"{per_image:.2f} s/image, ETA {(len(todo) - count) * per_image:.0f} s"
                )
    return 0


def load_profile_file(path: Path) -> tuple[LowRankCovariance, ThreatProfile | None]:
    """A profile file read and hash-checked once: its covariance, and its profile when it has provenance."""
    covariance = LowRankCovariance.load(path)
    if covariance.metadata.get("kind") != "threat-profile":
        return covariance, None
    return covariance, ThreatProfile.from_covariance(covariance, path)


def profile_covariance(args: argparse.Namespace, model: Normalized, indices: list[int]) -> LowRankCovariance | None:
    """The profile's covariance, refused (as ``experiment run`` and the app refuse it) when it was built on
    another model or on the images to certify. A bare covariance file carries no provenance to check."""
    if args.profile is None:
        return None
    covariance, profile = load_profile_file(args.profile)
    shape = tuple(model.info.input_shape)
    if profile is not None:
        check_usable(profile, model, shape, "cifar10", args.split, indices)
        return covariance
    print(
        f"note: {args.profile} is a bare covariance without provenance; whether it was fitted on this model "
        "and on other images than these cannot be checked",
        file=sys.stderr,
    )
    if tuple(covariance.shape) != shape:
        raise InputRefused(
            f"--profile {args.profile} is for inputs of shape {covariance.shape}, the model takes {shape}"
        )
    return covariance


def certify_row(
    model: torch.nn.Module, index: int, x: torch.Tensor, label: int, noise: SmoothingNoise, settings: CertifySettings
) -> tuple:
    """One image's TSV row; the same in any process, its noise drawn from (seed, index) alone."""
    generator = image_generator(settings.seed, index, model_device(model))
    cert = certify(model, x, noise, settings.n0, settings.n, settings.alpha, settings.batch, generator)
    return (
        index,
        label,
        cert.prediction,
        repr(cert.radius),
        int(cert.prediction == label),
        f"{cert.seconds:.4f}",
        cert.method_name,  # the display name, as in Cohen-style files written before
        cert.metric,
        repr(cert.p_lower),
    )


def certify_rows(
    chunk: list[tuple[int, torch.Tensor, int]],
    *,
    model: torch.nn.Module,
    noise: SmoothingNoise,
    settings: CertifySettings,
) -> list[tuple]:
    """In a Ray worker (the model already on the worker's device): the rows of one chunk of images.

    The worker's copy of the model and noise is checked once per chunk, not once per image.
    """
    with certification_checks(model, noise, tuple(chunk[0][1].shape)):
        return [certify_row(model, index, x, label, noise, settings) for index, x, label in chunk]


def _rows(
    model: torch.nn.Module,
    data: ImageSet,
    todo: list[int],
    noise: SmoothingNoise,
    settings: CertifySettings,
    options: RayOptions | None,
) -> Iterator[tuple]:
    """The rows of ``todo``, in order in this process, or as Ray's chunks finish."""
    if options is None:
        for index in todo:
            yield certify_row(model, index, data.tensor([index])[0], int(data.labels[index]), noise, settings)
        return
    chunks = (
        [(i, data.tensor([i])[0], int(data.labels[i])) for i in todo[start : start + options.chunk_size]]
        for start in range(0, len(todo), options.chunk_size)
    )
    shared = {"model": model, "noise": noise, "settings": settings}
    with contextlib.closing(map_chunks(certify_rows, shared, chunks, options)) as results:
        for _, rows in results:
            yield from rows
