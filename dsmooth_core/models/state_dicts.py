"""Putting a state dict into a network with errors that say exactly what does not fit."""

from __future__ import annotations

from collections.abc import Mapping

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


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LISTED])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _LISTED else "")
