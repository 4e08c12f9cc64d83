"""When a running job is ended by force: no progress report for too long, or no answer to Cancel.

Why: a job's work stops cleanly only at its next progress report (the library checks Cancel
there). Work that never reports again (a model that never returns, a stopped worker process)
would otherwise hold its job slot for good, and every other session's job would wait behind it.
Two limits end such a job:

- ``DSMOOTH_JOB_STALL_SECONDS`` (default 60): a running job that sends no progress report for
  this long fails with a message saying so. The library reports after every batch, so only a hung
  model, a stopped process or a batch slower than this limit trips it (raise it for such models).
- :data:`CANCEL_GRACE_SECONDS` (3): Cancel asks the work to stop at its next report; work that
  has not stopped this long after the click is ended.

Work in a worker process is ended by killing that process (the pool starts a fresh one). Work
that had to stay in a server thread cannot be killed: its job is ended and its slot freed, but
the thread runs on until the model returns, and its result is dropped.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from dsmooth_core import Cancelled

STALL_ENV = "DSMOOTH_JOB_STALL_SECONDS"
STALL_SECONDS = 60.0
CANCEL_GRACE_SECONDS = 3.0


class ForcedCancel(Cancelled):
    """Cancel was not answered in time, so the work was ended by force; the message says how."""


class NoProgress(RuntimeError):
    """The work sent no progress report for the stall limit, so it was ended; the message says how."""


@dataclass(frozen=True)
class Limits:
    stall_seconds: float = STALL_SECONDS
    cancel_grace_seconds: float = CANCEL_GRACE_SECONDS


def stall_seconds() -> float:
    """The stall limit from ``DSMOOTH_JOB_STALL_SECONDS`` (seconds, > 0), else the default."""
    raw = os.environ.get(STALL_ENV, "").strip()
    if not raw:
        return STALL_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{STALL_ENV} must be a positive number of seconds, got {raw!r}")
    return value


def from_environment() -> Limits:
    return Limits(stall_seconds=stall_seconds())


class Watch:
    """The clock of one running job: when its work last reported, and when Cancel was asked."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.heard = time.monotonic()
        self.asked: float | None = None

    def heard_from(self) -> None:
        self.heard = time.monotonic()

    def cancel_asked(self) -> None:
        if self.asked is None:
            self.asked = time.monotonic()

    def overdue(self, how: str) -> Exception | None:
        """The exception that ends the job now (its message ends with ``how`` it was ended), or ``None``."""
        now = time.monotonic()
        grace, stall = self.limits.cancel_grace_seconds, self.limits.stall_seconds
        if self.asked is not None and now - self.asked > grace:
            return ForcedCancel(f"The work did not stop within {grace:g} s of Cancel; {how}.")
        if now - self.heard > stall:
            return NoProgress(f"no progress report for {stall:g} s (the limit {STALL_ENV} sets); {how}")
        return None
