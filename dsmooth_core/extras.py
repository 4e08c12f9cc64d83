"""The optional packages behind ``pip install "dsmooth-lab[app]"`` and ``[scale]``, imported where used.

Why: ``import dsmooth_core`` stays free of plotly, kaleido and Ray, so a project that only certifies
installs and imports the core alone; a feature that needs an extra says which one to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

APP = "app"  # plotly charts, kaleido PNG export (and the Streamlit app)
SCALE = "scale"  # the Ray engine


class MissingExtraError(ImportError):
    """An optional package is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """``module``, imported now, or a one-line message naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        package = module.partition(".")[0]
        raise MissingExtraError(
            f'{purpose} needs {package}, which is not installed: pip install "dsmooth-lab[{extra}]"'
        ) from exc
