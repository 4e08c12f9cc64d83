"""Fetching published weights through the torch hub cache, with errors that say how to fix them offline."""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.parse import urlparse

import torch

from dsmooth_core.models.errors import ModelUnavailableError


def cache_path(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps (and looks for) the file behind ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def is_cached(url: str) -> bool:
    """Whether loading ``url`` would work without a network."""
    return cache_path(url).is_file()


def fetch_state_dict(url: str, *, progress: bool = True) -> dict[str, torch.Tensor]:
    """Load a state dict from the hub cache, downloading it first when needed.

    The hash prefix in the file name is checked, and the file is read with ``weights_only=True``.
    """
    target = cache_path(url)
    try:
        return torch.hub.load_state_dict_from_url(
            url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
        )
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        if target.is_file():
            raise ModelUnavailableError(
                f"The cached weights file {target} could not be read ({exc}). Delete it so it is downloaded again."
            ) from exc
        raise ModelUnavailableError(
            f"Could not download {url} ({exc}). Without internet access, download that file on "
            f"another machine and place it at {target} (the torch hub cache; set TORCH_HOME to move it)."
        ) from exc
