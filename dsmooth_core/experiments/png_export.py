"""PNG export of plotly figures in a child process that can be killed.

kaleido drives a headless Chromium; when that browser stalls, kaleido waits forever. Running the
export in its own process group bounds it: on time-out the whole group, browser included, is killed
and the caller falls back to HTML.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dsmooth_core.extras import APP, require

if TYPE_CHECKING:
    import plotly.graph_objects as go

PNG_TIMEOUT_SECONDS = 120
# argv: width, then (figure JSON, PNG path) pairs.
_EXPORT_SCRIPT = (
    "import sys, plotly.io as pio\n"
    "specs, outs = sys.argv[2::2], sys.argv[3::2]\n"
    "pio.write_images([pio.read_json(s) for s in specs], outs, width=int(sys.argv[1]))\n"
)


def export_png(
    figures: Sequence[go.Figure], paths: Sequence[Path], width: int, timeout: float = PNG_TIMEOUT_SECONDS
) -> None:
    """Write each figure to its PNG path; raise if kaleido fails or takes longer than ``timeout``."""
    require("kaleido", APP, "PNG export")  # checked here: the child would only say "No module named kaleido"
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-c", _EXPORT_SCRIPT, str(width)]
        for index, (figure, path) in enumerate(zip(figures, paths, strict=True)):
            spec = Path(tmp) / f"{index}.json"
            spec.write_text(figure.to_json())
            argv += [str(spec), str(path)]
        child = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            _, errors = child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            raise TimeoutError(f"kaleido did not finish within {timeout:g} s") from None
    if child.returncode:
        last = errors.strip().splitlines()[-1] if errors.strip() else f"exit status {child.returncode}"
        raise RuntimeError(last)
