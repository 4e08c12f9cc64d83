"""``--backend``: which engine runs the model's forward, for every command that loads a model."""

from __future__ import annotations

import argparse
import sys

from torch import nn

from dsmooth_core.backends import BACKEND_ENV, BACKENDS, default_backend, inference_model
from dsmooth_core.errors import InputRefused


def add_backend_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="the forward's engine: onnxruntime (the model's ONNX graph on the CPU, checked against torch first; "
        "about 1.8x faster on a CPU), torch, or auto (onnxruntime on a CPU, torch on a GPU). "
        f"Default: ${BACKEND_ENV}, else auto. "
        "Gradients (FGSM, the audit's PGD) always run on torch",
    )


def with_backend(model: nn.Module, args: argparse.Namespace) -> nn.Module:
    """``model`` on the command's ``--backend``: what runs the forward goes to stdout, a fallback's note to stderr.

    Stderr carries only what the user should act on, so a refusal stays the one line it is.
    """
    backend = getattr(args, "backend", None) or default_backend()  # hand-built Namespaces may leave it out
    if getattr(args, "compile", False):
        if backend == "onnxruntime":
            raise InputRefused("--compile speeds up the torch forward; it cannot go with --backend onnxruntime")
        backend = "torch"
    model, note = inference_model(model, backend)
    print(note, file=sys.stderr if note.startswith("note:") else sys.stdout)
    return model
