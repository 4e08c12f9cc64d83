"""Command-line entry: one sub-command per module, each registering its own parser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dsmooth_core.cli import attack_cmd, audit_cmd, certify_cmd, experiment_cmd, profile_cmd, train_cmd
from dsmooth_core.data import DataUnavailableError
from dsmooth_core.models import ModelLoadError, ModelUnavailableError
from dsmooth_core.progress import Cancelled

# Failures whose message already tells the user what to do: print it, no traceback.
USER_ERRORS = (ValueError, FileNotFoundError, DataUnavailableError, ModelUnavailableError, ModelLoadError, Cancelled)

COMMANDS = (certify_cmd, train_cmd, experiment_cmd, attack_cmd, profile_cmd, audit_cmd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dsmooth_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # recorded in the files a command writes, for reproducibility
    try:
        return args.run(args) or 0
    except USER_ERRORS as exc:
        parser.exit(2, f"error: {exc}\n")
