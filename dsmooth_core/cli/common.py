"""Pieces shared by the sub-commands: terminal progress, devices, git identity."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

from dsmooth_core.device import pick_device
from dsmooth_core.errors import InputRefused
from dsmooth_core.progress import ProgressCallback

WEIGHTS_HELP = "a state dict file of the model's architecture (e.g. one from train) to use instead of its own weights"


def terminal_progress(label: str, every_seconds: float = 2.0) -> ProgressCallback:
    """A callback that rewrites one terminal line at most every ``every_seconds``."""
    start = time.perf_counter()
    last = [0.0]

    def show(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] < every_seconds and done < total:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        end = "\n" if done >= total else ""
        print(f"\r{label}: {done}/{total} ({rate:.0f}/s)", end=end, file=sys.stderr, flush=True)

    return show


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the fastest device; a named one must exist here, or the command is refused."""
    if name == "auto":
        return pick_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InputRefused(f"--device {name!r} is not a device name; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputRefused(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputRefused(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputRefused(f"--device {name}: Apple's MPS is not available on this machine; use --device cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InputRefused(f"--device {name}: only cpu, cuda and mps are supported")
    return device


def git_commit() -> str:
    """The commit the code runs from, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
