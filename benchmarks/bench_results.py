"""Where a benchmark's figures go: one JSON file per run under ``benchmarks/results/``.

A number in the docs must name the command and the committed output it comes from, so every
benchmark writes what it printed, with the command line, the date and the machine, to a file that
``docs/make_performance.py`` turns into ``docs/PERFORMANCE.md``. The file's tables are lists of rows
(dicts with the same keys), written as they are shown: rounded figures, strings where a unit helps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
# Settings from the environment that change what a benchmark measures (threads, data, engine).
RELEVANT_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "DSMOOTH_TORCH_THREADS",
    "DSMOOTH_SPARE_CORES",
    "DSMOOTH_JOB_PROCESSES",
    "DSMOOTH_JOB_SLOTS",
    "DSMOOTH_BACKEND",
)

Rows = list[dict[str, object]]


def add_results_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS_DIR,
        help="folder for this run's JSON result file (default benchmarks/results; '-' writes none)",
    )


def machine() -> dict[str, object]:
    """What the figures depend on: cores, CPU model, load, torch and the GPU if any."""
    import torch

    facts: dict[str, object] = {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }
    if torch.cuda.is_available():
        facts["gpu"] = torch.cuda.get_device_name(0)
    return facts


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def command_line() -> str:
    """The command as it would be typed from the repository root, with the environment that matters."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    env = [f"{name}={os.environ[name]}" for name in RELEVANT_ENV if name in os.environ]
    return shlex.join([*env, "python", str(shown), *sys.argv[1:]])


def write_result(
    folder: Path | str,
    benchmark: str,
    settings: dict[str, object],
    tables: dict[str, Rows],
    notes: list[str] | None = None,
) -> Path | None:
    """Write one run's file (``<benchmark>-<UTC time>.json``) and return its path; ``'-'`` writes none."""
    if str(folder) == "-":
        return None
    now = datetime.now(timezone.utc)
    payload = {
        "benchmark": benchmark,
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command_line(),
        "machine": machine(),
        "settings": settings,
        "tables": tables,
        "notes": notes or [],
    }
    path = Path(folder) / f"{benchmark}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"results written to {path}")
    return path
