"""Command lines written from the CLI's own parser, so a line the app shows always runs as shown."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from dsmooth_core.cli import build_parser

PROGRAM = ("python", "-m", "dsmooth_core")


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(f"no sub-command {name!r}")


def _text(value: Any) -> Any:
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else str(value)


def command_line(command: Sequence[str], values: Mapping[str, Any]) -> str:
    """The shell line that runs ``command`` (e.g. ``("experiment", "run")``) with ``values`` by option dest.

    Options come from the parser (their long spelling, flags only when true); the line is parsed back
    and must give every value, so a renamed or removed option fails here rather than in a user's shell.
    """
    root = build_parser()
    parser = root
    for name in command:
        parser = _subparser(parser, name)
    options = {action.dest: action for action in parser._actions if action.option_strings}
    unknown = sorted(set(values) - set(options))
    if unknown:
        raise ValueError(f"'{' '.join(command)}' has no option for {', '.join(unknown)}")
    words = [*PROGRAM, *command]
    for dest, action in options.items():
        value = values.get(dest)
        if value is None:
            continue
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:
            words += [flag] if value else []
        elif action.nargs in ("+", "*"):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    try:
        parsed = root.parse_args(words[len(PROGRAM) :])
    except SystemExit as exc:  # argparse has printed why
        raise ValueError(f"the parser refuses {shlex.join(words)}") from exc
    for dest, value in values.items():
        if value is not None and _text(getattr(parsed, dest)) != _text(value):
            raise ValueError(f"{dest}: the command line gives {getattr(parsed, dest)!r}, not {value!r}")
    return shlex.join(words)
