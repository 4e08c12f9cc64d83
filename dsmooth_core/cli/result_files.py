"""Resumable TSV result files that remember the settings that shaped them (certify's and audit's).

A TSV keeps Cohen et al.'s plain layout, so ``pandas.read_csv(path, sep="\\t")`` and their scripts
read it unchanged; its settings live beside it in ``<file>.settings.json``. A resume compares this
run's settings with the file's and refuses any difference, naming the setting: rows made with
another sigma, sample size or model must never be mixed into one file.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from dsmooth_core.appendfile import locked_append
from dsmooth_core.backends import forward_name
from dsmooth_core.device import model_device
from dsmooth_core.errors import InputRefused
from dsmooth_core.models import ModelInfo
from dsmooth_core.settings import TORCH_FORWARD

SETTINGS_SUFFIX = ".settings.json"
FORMAT = 1  # of the settings file

# What differs when a component of the model's identity does, named by the options that set it; the
# weights come last, as another architecture or program has other weights too.
_MODEL_PARTS = {
    "code_hash": "the model's program (--model-file)",
    "architecture": "the model's architecture (--model or --architecture)",
    "mean": "the model's normalization (--normalization)",
    "std": "the model's normalization (--normalization)",
    "input_shape": "the model's input size (--input-size)",
    "class_names": "the model's classes (--classes)",
    "resize_size": "the model's resize",
    "weights_hash": "the model's weights (--model, --weights, --untrained or --model-file)",  # last: any other
}


# Settings that a side file written before they existed holds implicitly: its rows were made by torch.
_IMPLIED = {"--backend": TORCH_FORWARD}


def settings_path(path: Path) -> Path:
    """The side file holding the settings of result file ``path``."""
    return path.with_name(path.name + SETTINGS_SUFFIX)


def model_settings(info: ModelInfo) -> dict[str, Any]:
    """The model's identity and its parts, so a refusal can say which part differs."""
    parts = {
        "weights_hash": info.weights_hash,
        "code_hash": info.code_hash,
        "architecture": info.architecture,
        "mean": list(info.mean),
        "std": list(info.std),
        "input_shape": list(info.input_shape),
        "class_names": list(info.class_names),
        "resize_size": info.resize_size,
    }
    return {"identity": info.identity, "name": info.name, "parts": parts}


def forward_settings(model: torch.nn.Module) -> dict[str, str]:
    """The engine that ran the rows' forward (``--backend`` resolved: a fallback to torch says torch).

    Compared on resume like any setting: the engines' votes may differ by a handful of near-ties, so
    rows of both never share a file.
    """
    return {"--backend": forward_name(model)}


def run_facts(model: torch.nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    """What a reader of the side file wants to know but a resume may change (the device draws the noise
    from its own generator, so rows of another device are valid certificates from other draws)."""
    return {
        "model_name": model.info.name,
        "device": model_device(model).type,
        "command": getattr(args, "argv", None),
    }


def _show(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _difference(kept: Mapping[str, Any], wanted: Mapping[str, Any]) -> str | None:
    """The first setting that differs, as a phrase naming its option and both values; None when equal."""
    for name in sorted(set(kept) | set(wanted), key=lambda n: (n == "model", n)):
        if kept.get(name) == wanted.get(name):
            continue
        if name == "model" and isinstance(kept.get(name), dict) and isinstance(wanted.get(name), dict):
            if kept[name].get("identity") == wanted[name].get("identity"):
                continue
            old, new = kept[name].get("parts", {}), wanted[name]["parts"]
            part = next((p for p in _MODEL_PARTS if old.get(p) != new.get(p)), None)
            if part is None:
                return "the model's identity"
            return f"{_MODEL_PARTS[part]}: the file has {_show(old.get(part))}, this run {_show(new.get(part))}"
        return f"{name}: the file has {_show(kept.get(name))}, this run {_show(wanted.get(name))}"
    return None


def check_settings(path: Path, kind: str, settings: Mapping[str, Any]) -> None:
    """Refuse to add rows to ``path`` (which has rows) unless its side file holds exactly ``settings``."""
    side = settings_path(path)
    if not side.is_file():
        raise InputRefused(
            f"--out {path} has no settings file ({side.name}): it was made by an earlier version, so whether "
            "its rows were made with these settings cannot be checked; write to another --out"
        )
    try:
        stored = json.loads(side.read_text(encoding="utf-8"))
        kept = stored["settings"]
        stored_kind = stored["kind"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputRefused(f"{side} is not a settings file of this project ({exc}); write to another --out") from None
    if stored_kind != kind or not isinstance(kept, dict):
        raise InputRefused(f"{side} belongs to a {stored_kind} file, not a {kind} TSV; write to another --out")
    difference = _difference({**_IMPLIED, **kept}, settings)
    if difference is not None:
        raise InputRefused(
            f"--out {path} was made with other settings ({difference}); "
            "resume it with the file's settings, or write to another --out"
        )


def write_settings(path: Path, kind: str, settings: Mapping[str, Any], about: Mapping[str, Any]) -> None:
    """Write ``path``'s side file atomically (``about``: what a reader wants to know, not compared)."""
    side = settings_path(path)
    temporary = side.with_name(side.name + ".tmp")
    body = {"format": FORMAT, "kind": kind, "settings": dict(settings), "about": dict(about)}
    temporary.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, side)


def _check_header(path: Path, columns: tuple[str, ...], kind: str) -> None:
    """Refuse a file whose first line is not this TSV's header (another kind of file)."""
    with path.open(newline="") as f:
        header = next(csv.reader(f, delimiter="\t"), None)
    if header is None or tuple(header) != columns:
        raise InputRefused(f"--out {path} exists but is not a {kind} TSV (its first line is not the header)")


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
                raise InputRefused(f"--out {path}, line {line}, is not a {kind} row; write to another --out")
            done.add(tuple(row[i] for i in positions))
    return done


@contextlib.contextmanager
def resumable_tsv(
    path: Path,
    columns: tuple[str, ...],
    key_columns: tuple[str, ...],
    kind: str,
    settings: Mapping[str, Any] | None = None,
    about: Mapping[str, Any] | None = None,
) -> Iterator[tuple[set[tuple[str, ...]], Callable[[tuple[object, ...]], None]]]:
    """The keys already in ``path`` and a row writer, under the file's lock.

    With ``settings``, a file that has rows must have been made with them (:func:`check_settings`),
    and a new file gets them in its side file, written with the header and the first row. A file
    this run created and left without rows is removed, whether the run failed or had nothing to do,
    so a refusal leaves nothing behind.
    """
    created = not path.exists()
    if not created and path.stat().st_size and settings is not None:
        # before the lock's repairs (a torn last line), so a refused file stays untouched
        _check_header(path, columns, kind)
        check_settings(path, kind, settings)
    try:
        with locked_append(path) as out:
            done = finished_keys(path, columns, key_columns, kind)
            empty = path.stat().st_size == 0
            if not empty and settings is not None:
                check_settings(path, kind, settings)
            header_needed = [empty]

            def write(row: tuple[object, ...]) -> None:
                if header_needed[0]:
                    if settings is not None:
                        write_settings(path, kind, settings, about or {})
                    print("\t".join(columns), file=out, flush=True)
                    header_needed[0] = False
                print("\t".join(map(str, row)), file=out, flush=True)  # flushed: an interrupt keeps whole rows

            yield done, write
    finally:
        if created and path.is_file() and path.stat().st_size == 0:
            path.unlink()
