"""Write docs/CLI.md from the command line's own parser, so the reference cannot drift from the code.

Run from the repository root: ``python docs/make_cli_reference.py`` (``--check`` only compares and
exits 1 when the committed page differs; ``tests/test_docs.py`` does the same).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

PAGE = Path(__file__).resolve().parent / "CLI.md"
WIDTH = 100  # help text is wrapped to a fixed width, not the terminal's, so the page is the same everywhere

INTRO = """# Command-line reference

Generated from `dsmooth_core.cli.build_parser()` by `python docs/make_cli_reference.py`; do not edit
by hand (`tests/test_docs.py` fails when this page differs from what the parser gives).

Every refusal prints one line on stderr and exits with code 2; `--debug` anywhere on the command
line shows the traceback instead. See [REFUSALS.md](REFUSALS.md) for what is refused and why.
"""


def _fixed_width(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=WIDTH)


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    """(command words, one-line help, parser) for every sub-command, depth first, in registration order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                words = (*path, name)
                yield " ".join(words), summaries.get(name, ""), sub
                yield from _commands(sub, words)


def reference() -> str:
    from dsmooth_core.cli import build_parser

    parser = build_parser()
    _fixed_width(parser)
    parts = [INTRO, "## Commands\n"]
    commands = list(_commands(parser))
    for words, summary, _ in commands:
        parts.append(f"- [`{words}`](#{words.replace(' ', '-')}): {summary}")
    parts.append("\n## Top level\n\n```text\n" + parser.format_help().rstrip() + "\n```")
    for words, summary, sub in commands:
        _fixed_width(sub)
        parts.append(f"\n## {words}\n\n{summary}\n\n```text\n{sub.format_help().rstrip()}\n```")
    return "\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare with the committed page instead of writing it")
    args = parser.parse_args()
    text = reference()
    if args.check:
        same = PAGE.is_file() and PAGE.read_text() == text
        print(f"{PAGE.name} is {'up to date' if same else 'out of date: run python docs/make_cli_reference.py'}")
        return 0 if same else 1
    PAGE.write_text(text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(PAGE.parents[1]))  # the repository root, for dsmooth_core when run as a script
    sys.exit(main())
