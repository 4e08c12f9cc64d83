"""Putting a state dict into a network with errors that say exactly what does not fit."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from dsmooth_core.models.errors import ModelLoadError

_WRAPPER_KEYS = ("state_dict", "model_state_dict")
_PARALLEL_PREFIX = "module."
_LISTED = 8  # names shown per kind of mismatch before "..."


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """The tensors of a state dict, accepting training checkpoints and DataParallel prefixes.

    A dict with a ``state_dict`` or ``model_state_dict`` entry is unwrapped; a ``module.`` prefix
    on every key (``nn.DataParallel``) is stripped.
    """
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError(f"expected a state dict (a dict of tensors), found {type(obj).__name__}")
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(tensors) != len(obj):
        others = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
        raise ModelLoadError(f"expected a state dict of tensors; these entries are not tensors: {_names(others)}")
    if all(k.startswith(_PARALLEL_PREFIX) for k in tensors):
        tensors = {k[len(_PARALLEL_PREFIX) :]: v for k, v in tensors.items()}
    return tensors


def load_strict(net: nn.Module, state_dict: Mapping[str, torch.Tensor], arch_name: str) -> None:
    """Load every tensor or none, listing missing keys, unexpected keys and shape mismatches."""
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    problems = [
        f"{label}: {_names(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches (file vs architecture)", mismatched),
        )
        if keys
    ]
    if problems:
        raise ModelLoadError(f"state dict does not match {arch_name}: " + "; ".join(problems))
    net.load_state_dict(state_dict, strict=True)


def check_archive(source: bytes | Path, what: str) -> None:
    """Refuse a zip-format torch file whose stored CRCs fail: torch.load reads such bytes without a word.

    A bit-flipped weights file would otherwise load and certify with wrong weights. Files that are not
    zip archives (torch's legacy format, or no model at all) are left to the loader to judge.
    """
    if not zipfile.is_zipfile(_stream(source)):
        return
    try:
        with zipfile.ZipFile(_stream(source)) as archive:
            broken = archive.testzip()
    except Exception as exc:  # BadZipFile, OSError, or zlib.error on a damaged deflate stream
        raise ModelLoadError(f"{what} is a damaged zip archive and is refused ({exc})") from None
    if broken is not None:
        raise ModelLoadError(
            f"{what} is corrupted: the checksum (CRC) of its entry {broken} fails, so its weights are refused"
        )


def program_kind(source: bytes | Path) -> str | None:
    """ "torch.export" or "TorchScript" when the zip layout is that of a saved program, else None."""
    if not zipfile.is_zipfile(_stream(source)):
        return None
    with zipfile.ZipFile(_stream(source)) as archive:
        names = archive.namelist()
    if any(n.rsplit("/", 1)[-1] == "archive_format" for n in names):
        return "torch.export"
    if any("/code/" in n or n.endswith("constants.pkl") for n in names):
        return "TorchScript"
    return None


def _stream(source: bytes | Path) -> io.BytesIO | Path:
    return io.BytesIO(source) if isinstance(source, bytes) else source


def check_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse weights holding NaN or inf: such a model votes for class 0 on every input."""
    bad = sorted(
        key
        for key, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    )
    if bad:
        raise ModelLoadError(f"{what} holds non-finite values (NaN or inf) in {_names(bad)}; refused")


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _LISTED else "")
