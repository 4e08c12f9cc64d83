"""Progress reporting and cancellation shared by every long-running routine.

A callback receives ``(done, total)`` and returns ``True`` to ask the routine to stop; the routine
then raises :class:`Cancelled` so no half-finished result is mistaken for a real one.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressCallback = Callable[[int, int], "bool | None"]


class Cancelled(RuntimeError):
    """Raised when a progress callback asked to stop."""


def report(progress: ProgressCallback | None, done: int, total: int) -> None:
    """Forward progress to the callback and honour a request to stop."""
    if progress is not None and progress(done, total):
        raise Cancelled(f"cancelled after {done} of {total}")
