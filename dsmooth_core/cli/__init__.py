"""Command-line entry: one sub-command per module, each registering its own parser.

Every refusal ends the same way, here and nowhere else: one line on stderr and exit code 2, never a
traceback (``--debug``, anywhere on the command line, shows it).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from dsmooth_core.appendfile import FileBusyError
from dsmooth_core.cli import attack_cmd, audit_cmd, certify_cmd, experiment_cmd, profile_cmd, train_cmd
from dsmooth_core.data import DataUnavailableError
from dsmooth_core.extras import MissingExtraError
from dsmooth_core.models import ModelLoadError, ModelUnavailableError
from dsmooth_core.progress import Cancelled

# Failures whose message already tells the user what to do: print it, no traceback. ValueError covers the
# project's refusals (InputRefused, ModelLoadError, ModelContractError, ProfileMismatchError, UploadError).
USER_ERRORS = (
    ValueError,
    OSError,
    DataUnavailableError,
    ModelUnavailableError,
    ModelLoadError,
    FileBusyError,
    Cancelled,
    MissingExtraError,
)
DEBUG_FLAG = "--debug"
REFUSED, FAILED = 2, 1

COMMANDS = (certify_cmd, train_cmd, experiment_cmd, attack_cmd, profile_cmd, audit_cmd)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every sub-command (also what the app's command lines are generated from)."""
    parser = argparse.ArgumentParser(prog="dsmooth", description=__doc__)
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    args = parser.parse_args([a for a in argv if a != DEBUG_FLAG])
    args.argv = argv  # recorded in the files a command writes, for reproducibility
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        parser.exit(130, "interrupted; finished results are kept and a rerun resumes from them\n")
    except Exception as exc:
        if debug:
            traceback.print_exc()
        if isinstance(exc, USER_ERRORS):
            parser.exit(REFUSED, f"error: {one_line(exc)}\n")
        parser.exit(FAILED, f"error: unexpected {type(exc).__name__}: {one_line(exc)} (rerun with --debug)\n")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (torch's messages span several)."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__
