"""Where data sets live on disk."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "DSMOOTH_DATA_DIR"


def data_dir() -> Path:
    """``$DSMOOTH_DATA_DIR`` if set, else ``./data`` (git-ignored), as an absolute path."""
    return Path(os.environ.get(DATA_DIR_ENV) or "data").expanduser().resolve()
