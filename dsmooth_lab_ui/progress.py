"""The progress callback a job's work receives, wherever the work runs (worker process or thread).

Why a module of its own: the work (:mod:`dsmooth_lab_ui.tasks`), the worker process and the
scheduler all speak this interface, and none of them should import another just for a type.
"""

from __future__ import annotations

from typing import Protocol


class JobProgress(Protocol):
    """The library's ``(done, total) -> stop?`` callback, plus ``stage`` to name the current step."""

    def stage(self, label: str) -> None: ...

    def __call__(self, done: int, total: int) -> bool: ...
