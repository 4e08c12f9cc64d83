"""``--model-file`` and what the user states about it, for every command that takes a model."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dsmooth_core.cli.backend_options import add_backend_argument
from dsmooth_core.models import ARCHITECTURE_NAMES, COHEN_ARCHITECTURES, Normalized
from dsmooth_core.models.model_file import CLASS_PRESETS, NORMALIZATION_PRESETS, ModelFileOptions, load_model_file


def add_model_file_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "your own model",
        "--model-file replaces --model: a state dict, a checkpoint in Cohen et al.'s format "
        f"({', '.join(COHEN_ARCHITECTURES)}; it states its architecture, classes and normalization, so the "
        "options below may be left out), or a TorchScript or torch.export (.pt2) file",
    )
    group.add_argument("--model-file", type=Path, default=None, help="the model file (replaces --model)")
    group.add_argument(
        "--trust-code",
        action="store_true",
        help="load a TorchScript or torch.export file: such files are programs that can run code, so only "
        "for files from a source you trust (a state dict needs no trust)",
    )
    group.add_argument("--architecture", choices=ARCHITECTURE_NAMES, help="the registry architecture of a state dict")
    group.add_argument("--input-size", help="C,H,W the model takes (default: the architecture's, else 3,32,32)")
    group.add_argument("--classes", help=f"a preset ({', '.join(CLASS_PRESETS)}) or comma-separated class names")
    group.add_argument(
        "--normalization",
        default="self",
        help=f"the input normalization the model expects: 'self' (it normalizes [0, 1] pixels itself), "
        f"{', '.join(NORMALIZATION_PRESETS)}, or mean/std as 'm1,m2,m3/s1,s2,s3' (default: %(default)s)",
    )
    add_backend_argument(parser)


def load_model_file_arg(args: argparse.Namespace, device: torch.device) -> Normalized | None:
    """The model of --model-file, or None when the command uses a registry model."""
    if getattr(args, "model_file", None) is None:  # hand-built Namespaces may leave it out
        return None
    if getattr(args, "weights", None) is not None or getattr(args, "untrained", False):
        raise ValueError("--model-file replaces --model, --weights and --untrained: give only one")
    options = ModelFileOptions(
        architecture=args.architecture,
        input_size=args.input_size,
        classes=args.classes,
        normalization=args.normalization,
        trust_code=args.trust_code,
    )
    return load_model_file(args.model_file, options, name=args.model_file.name, device=device)


def require_cifar10(model: Normalized, what: str) -> None:
    """Refuse a model that does not take CIFAR-10 images, saying how a model file qualifies."""
    if model.info.dataset == "cifar10":
        return
    hint = (
        " (a model file counts as one with --input-size 3,32,32 and --classes cifar10)"
        if model.info.dataset == "custom"
        else ""
    )
    raise ValueError(f"model {model.info.name!r} is a {model.info.dataset} model; {what} need a CIFAR-10 model{hint}")
