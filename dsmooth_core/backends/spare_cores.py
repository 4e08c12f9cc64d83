"""Lend ONNX Runtime's batches the cores a thread budget leaves free, at the lowest CPU priority.

Why: the app keeps one core of two free for the browser and its server, yet while a certification runs
that core is mostly idle (the page only redraws a progress bar). Helper threads under Linux's
``SCHED_IDLE`` policy run only when a core has nothing else to run: any other task that wakes takes the
core at once, and the scheduler counts a core that runs only such threads as idle when it places a
waking task. So the browser keeps its core whenever it asks for it, and the job gets the rest.
A batch is cut into chunks of :data:`CHUNK` images that the caller and its helpers take in turn. When
none is left, the caller waits for the helpers' chunks, but only about as long as a chunk takes it
(:data:`PATIENCE` times): on a machine busy everywhere a ``SCHED_IDLE`` helper may get no time at all,
and the caller then runs its chunk itself, so a starved helper never holds a job up. Each image's
logits do not depend on the chunk it is in or on who ran it: the votes are the same to the bit.

Measured by ``benchmarks/bench_spare_cores.py`` (figures in ``docs/PERFORMANCE.md``), on 2 cores: the
app's three certificates take about half the time on a quiet machine and about the same beside a
process busy on a core all the time, which loses nothing measurable; a process busy half the time
loses about a tenth of its work rate. In the app, page switches during a certification take as long
with the helper as without.

Linux only: elsewhere one thread's priority cannot be lowered on its own (macOS's ``setpriority`` would
lower the whole process), and :func:`spare_cores` lends nothing there.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

CHUNK = 50  # images a thread takes at a time; ONNX Runtime's single-thread rate is highest from 50 to 100
PATIENCE = 2.0  # how many of its own chunk times the caller waits for a helper's chunk before running it
_LENT: ContextVar[int] = ContextVar("dsmooth_spare_cores", default=0)
_POOL_LOCK = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_lowered = threading.local()  # .done: this helper thread runs under SCHED_IDLE


def supported() -> bool:
    """Whether a single thread's priority can be lowered here (Linux)."""
    return sys.platform.startswith("linux") and hasattr(os, "SCHED_IDLE")


@contextmanager
def spare_cores(count: int) -> Iterator[None]:
    """Within the body, ONNX forwards of this thread share their batches with ``count`` low-priority helpers.

    ``count`` is the number of cores the caller's thread budget left free (0 lends none).
    """
    if count < 0:
        raise ValueError(f"spare core count must be >= 0, got {count}")
    token = _LENT.set(count if supported() else 0)
    try:
        yield
    finally:
        _LENT.reset(token)


def lent() -> int:
    """How many helpers this thread's ONNX forwards may use now."""
    return _LENT.get()


def _lower_priority() -> None:
    try:
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))
    except OSError:  # a helper that cannot step back never works: it would take the browser's core
        return
    _lowered.done = True


def _helpers(count: int) -> ThreadPoolExecutor:
    """The process's helper threads, at least ``count`` of them (started at their low priority)."""
    global _pool, _pool_size
    with _POOL_LOCK:
        if _pool is None or _pool_size < count:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(count, thread_name_prefix="dsmooth-spare", initializer=_lower_priority)
            _pool_size = count
        return _pool


def run_in_chunks(
    batch: np.ndarray,
    run: Callable[[np.ndarray], np.ndarray],
    run_helper: Callable[[np.ndarray], np.ndarray],
    caller_threads: int = 1,
) -> np.ndarray:
    """``run(batch)``, with chunks of it run by the lent helpers (which call ``run_helper``), in batch order.

    The caller takes ``caller_threads`` chunks at a time, so its intra-op threads keep work enough to
    share; each helper takes one. An image's output does not depend on the chunk it went in, so the result
    equals ``run(batch)``. A helper that fails or falls behind costs only time: the caller runs its chunk.
    """
    own = CHUNK * max(1, caller_threads)
    helpers = min(lent(), (len(batch) - own) // CHUNK)
    if helpers <= 0:
        return run(batch)
    outputs: dict[int, np.ndarray] = {}  # by first row
    helping: dict[int, threading.Event] = {}  # first row of each helper's chunk: set when its output is in
    cursor = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def next_rows(rows: int, helper: bool = False) -> int | None:
        with lock:
            first = cursor[0]
            if first >= len(batch) or stop.is_set():
                return None
            cursor[0] = min(first + rows, len(batch))
            if helper:
                helping[first] = threading.Event()
            return first

    def help_out() -> None:
        if not getattr(_lowered, "done", False):
            return
        while (first := next_rows(CHUNK, helper=True)) is not None:
            try:
                outputs.setdefault(first, run_helper(batch[first : first + CHUNK]))
            except Exception:  # the caller runs this chunk itself when it finds no output for it
                return
            finally:
                helping[first].set()

    first = next_rows(own)  # the caller's first piece, taken before any helper starts: it times a chunk
    pending = [_helpers(helpers).submit(help_out) for _ in range(helpers)]
    try:
        while first is not None:
            start = time.perf_counter()
            outputs[first] = run(batch[first : first + own])
            seconds_per_chunk = (time.perf_counter() - start) * CHUNK / len(outputs[first])
            first = next_rows(own)
    finally:
        with lock:
            stop.set()  # helpers take no new chunk
            claimed = sorted(helping)
        for future in pending:
            future.cancel()  # a helper not yet started (busy with another call's chunk) never will
    for first in claimed:
        helping[first].wait(PATIENCE * seconds_per_chunk)
        if first not in outputs:  # the helper fell behind (or failed): its chunk is run here
            outputs[first] = run(batch[first : first + CHUNK])
    return np.concatenate([outputs[first] for first in sorted(outputs)])
