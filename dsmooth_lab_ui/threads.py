"""How many torch intra-op threads a job gets: from the work's batch size and the machine's cores.

Why: on a small machine the Streamlit server and the browser share the cores with torch. OpenMP
threads that wait on a busy core wait on each other, so a 2-thread batch-1 loop (every Square
query) ran about 3x slower than a 1-thread one with the other core busy. Small batches gain little
from more threads anyway. Large batches may use more threads, always leaving one core free.

The choice is the app's: the job runner sets torch's threads around one job, and every run of the
app sets them for the page's own small work (``for_batch(1)``); the library takes none. On 2 cores
the Certify page's redraw after a job took 0.61 s with torch's default 2 threads in the server
and 0.09 s with 1 (the region slice's small tensor ops waiting on a busy second core).
``DSMOOTH_TORCH_THREADS`` overrides the rule: a number, or ``auto`` (the default).
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager

from dsmooth_core.backends.spare_cores import spare_cores

ENV = "DSMOOTH_TORCH_THREADS"
SPARE_ENV = "DSMOOTH_SPARE_CORES"
LARGE_BATCH = 64  # from this many images per model call, extra threads pay off
MAX_THREADS = 16


def usable_cores() -> int:
    """Cores this process may run on (respects CPU affinity, e.g. a container's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def setting() -> int | None:
    """The fixed thread count from ``DSMOOTH_TORCH_THREADS``, or ``None`` for the automatic rule."""
    raw = os.environ.get(ENV, "auto").strip().lower()
    if raw in ("", "auto"):
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV} must be a positive whole number or 'auto', got {raw!r}") from exc
    if value < 1:
        raise ValueError(f"{ENV} must be a positive whole number or 'auto', got {raw!r}")
    return value


def budget(batch: int, cores: int, fixed: int | None = None) -> int:
    """Intra-op threads for work that calls the model on ``batch`` images at a time.

    Batch-1 loops and small batches: 1 thread. Large batches: every core but one (at least 1,
    at most ``MAX_THREADS``). A ``fixed`` setting wins, capped at the core count.
    """
    if fixed is not None:
        return max(1, min(fixed, cores))
    if batch < LARGE_BATCH:
        return 1
    return max(1, min(cores - 1, MAX_THREADS))


def spare(threads: int) -> int:
    """Cores a job of ``threads`` intra-op threads leaves free: its ONNX forward may use their idle time
    at the lowest priority (:func:`dsmooth_core.backends.spare_cores.spare_cores`), never their share.
    ``DSMOOTH_SPARE_CORES=off`` lends none (a machine whose idle cores must stay idle)."""
    raw = os.environ.get(SPARE_ENV, "on").strip().lower()
    if raw not in ("", "on", "off"):
        raise ValueError(f"{SPARE_ENV} must be 'on' or 'off', got {raw!r}")
    return 0 if raw == "off" else max(0, min(usable_cores() - threads, MAX_THREADS))


def lending_spare_cores(threads: int) -> AbstractContextManager[None]:
    """The body's ONNX forwards lent the idle time of the cores a job of ``threads`` threads leaves free
    (:func:`spare`): how the worker, the server's job thread and the rate measurement run the work."""
    return spare_cores(spare(threads))


def for_batch(batch: int) -> int:
    """:func:`budget` on this machine with the configured setting: what a job (or a page, batch 1) gets."""
    return budget(batch, usable_cores(), setting())
