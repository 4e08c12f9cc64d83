"""Module-level work for the worker-process tests: picklable by reference, so it runs in a worker."""

from __future__ import annotations

import gc
import os
import time

from dsmooth_core import Cancelled


def report_and_return_pid(progress) -> int:
    progress.stage("reporting")
    for done in range(1, 4):
        progress(done, 3)
    return os.getpid()


def count_until_cancelled(total: int, progress) -> int:
    for done in range(1, total + 1):
        time.sleep(0.01)
        if progress(done, total):
            raise Cancelled(f"cancelled after {done} steps")
    return os.getpid()


def fail(message: str, progress) -> None:
    raise ValueError(message)


def die(code: int, progress) -> None:
    os._exit(code)


def frozen_objects(progress) -> int:
    return gc.get_freeze_count()
