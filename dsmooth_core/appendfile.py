"""Append-only result files that survive faults: one writer at a time, and no torn last line.

Results (certify's TSV, the experiment records) are appended one line per finished item and resumed
by reading back what is there. An interrupted write can leave a last line without its newline; it
cannot be a whole result, so it is dropped and that item is redone. Two processes appending to the
same file would each redo the other's items and duplicate every line, so a writer holds an
exclusive lock on the file (``fcntl.flock``, released when the process ends, even on a crash).
"""

from __future__ import annotations

import fcntl
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


class FileBusyError(RuntimeError):
    """Another writer holds the lock on a result file."""


def check_writable_file(path: Path, flag: str = "--out") -> None:
    """Refuse a results path that is a directory (or sits under a file) before any work is done."""
    if path.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a directory; give a file name, e.g. {path / 'results.tsv'}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"{flag} {path}: {parent} is a file, not a folder")


def drop_torn_tail(handle: TextIO, path: Path) -> bool:
    """Cut a last line left without its newline by an interrupted write; True when one was cut."""
    handle.flush()
    fd = handle.fileno()
    size = os.fstat(fd).st_size
    if size == 0:
        return False
    data = os.pread(fd, size, 0)
    if data.endswith(b"\n"):
        return False
    os.ftruncate(fd, data.rfind(b"\n") + 1)
    warnings.warn(f"{path}: dropping an incomplete last line left by an interrupted run", stacklevel=3)
    return True


@contextmanager
def locked_append(path: str | Path) -> Iterator[TextIO]:
    """Open ``path`` for appending under an exclusive lock, with any torn last line dropped.

    Raises :class:`FileBusyError` at once (never waits) when another writer holds the lock.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+", encoding="utf-8", newline="")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileBusyError(
                f"{path} is being written by another process (it holds a lock on the file); "
                "wait for it to finish, or write to another file"
            ) from None
        drop_torn_tail(handle, path)
        yield handle
    finally:
        handle.close()  # closing releases the lock
