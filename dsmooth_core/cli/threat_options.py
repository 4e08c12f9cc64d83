"""Options shared by ``attack`` and ``profile``: which model, and which threat (a preset plus overrides)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from dsmooth_core.attacks import PRESETS, AttackConfig
from dsmooth_core.cli.backend_options import with_backend
from dsmooth_core.cli.common import WEIGHTS_HELP, resolve_device
from dsmooth_core.cli.model_file_options import add_model_file_options, load_model_file_arg, require_cifar10
from dsmooth_core.experiments.setup import load_experiment_model
from dsmooth_core.models import DEFAULT_MODEL, Normalized


def number(text: str) -> float:
    """A float written as a decimal or a fraction, so the usual 8/255 can be typed as is."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None


# The override flag of every AttackConfig field (a test checks none is missing): flag, argparse options.
_OVERRIDES: dict[str, tuple[str, dict[str, Any]]] = {
    "eps_inf": ("--eps-inf", {"type": number, "help": "Square's l_inf radius, e.g. 8/255"}),
    "n_queries": ("--n-queries", {"type": int, "help": "Square's query budget per image"}),
    "p_init": ("--p-init", {"type": float, "help": "Square's initial fraction of pixels per square"}),
    "fgsm": ("--fgsm", {"choices": ("l2", "linf", "none"), "help": "FGSM variant after Square, or none"}),
    "eps_fgsm": ("--eps-fgsm", {"type": number, "help": "FGSM step size"}),
    "project_linf": (
        "--project-linf",
        {"action": argparse.BooleanOptionalAction, "help": "project the result back into the l_inf ball"},
    ),
}
# Which pixels the threat moves (attacks/support.py); each overrides one field of the preset's support.
_SUPPORT_OVERRIDES: dict[str, tuple[str, dict[str, Any]]] = {
    "window": (
        "--window",
        {
            "type": lambda text: _window(text),
            "help": "only a fixed square moves: TOP,LEFT,SIDE in pixels (negative: from the bottom/right), "
            "or 'none' for the whole image",
        },
    ),
    "grid": ("--grid", {"type": int, "help": "blocks of GRID x GRID pixels move together (1: every pixel)"}),
    "outside": ("--outside", {"type": float, "help": "share of eps_inf allowed outside the window (0: none)"}),
}


def _window(text: str) -> tuple[int, int, int] | str:
    if text.strip().lower() == "none":
        return "none"
    try:
        top, left, side = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a window is TOP,LEFT,SIDE in whole pixels, got {text!r}") from None
    return top, left, side


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, help="a CIFAR-10 model of the registry")
    parser.add_argument(
        "--untrained",
        action="store_true",
        help="untrained weights drawn from a fixed seed (no download): for tests and offline demos only",
    )
    parser.add_argument("--weights", type=Path, default=None, help=WEIGHTS_HELP)
    parser.add_argument("--device", default="auto")
    add_model_file_options(parser)


def add_attack_options(parser: argparse.ArgumentParser) -> None:
    """--preset, then one override per AttackConfig field (unset flags keep the preset's value)."""
    group = parser.add_argument_group("threat", "Square Attack then FGSM (docs/MATH.md section 5)")
    group.add_argument("--preset", choices=sorted(PRESETS), default="conventional")
    for name, (flag, options) in {**_OVERRIDES, **_SUPPORT_OVERRIDES}.items():
        group.add_argument(flag, dest=name, default=None, **options)


def attack_config(args: argparse.Namespace) -> AttackConfig:
    """The preset with the overrides given on the command line (validated by AttackConfig)."""
    overrides = {name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None}
    if overrides.get("fgsm") == "none":
        overrides["fgsm"] = None
    preset = PRESETS[args.preset]
    support = {name: getattr(args, name, None) for name in _SUPPORT_OVERRIDES}
    support = {name: value for name, value in support.items() if value is not None}
    if support.get("window") == "none":
        support["window"] = None
    if support:
        overrides["support"] = replace(preset.support, **support)
    return replace(preset, **overrides)


def describe_attack(config: AttackConfig) -> str:
    fgsm = "no FGSM" if config.fgsm is None else f"FGSM {config.fgsm} {config.eps_fgsm:g}"
    projected = ", projected into the l_inf ball" if config.project_linf else ""
    moves = "" if config.support.whole_image else f"; moves only {config.support.describe()}"
    return (
        f"Square eps_inf {config.eps_inf:.4g} ({config.eps_inf * 255:.3g}/255), {config.n_queries} queries, "
        f"p_init {config.p_init:g}; {fgsm}{projected}{moves}"
    )


def load_cifar_model(args: argparse.Namespace, what: str = "these commands attack CIFAR-10 and") -> Normalized:
    """The --model-file or registry model, refused unless it takes CIFAR-10 images (the only data set here).

    Untrained weights come from a fixed seed (``load_experiment_model``), so repeated runs get the same
    weights hash and a cached profile is found again.
    """
    device = resolve_device(args.device)
    model = load_model_file_arg(args, device)
    if model is None:
        model = load_experiment_model(args.model, device, pretrained=not args.untrained, weights=args.weights)
    require_cifar10(model, what)
    return with_backend(model, args)
