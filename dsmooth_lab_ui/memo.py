"""A small least-recently-used result cache, safe to share between threads; no streamlit.

Two uses: the scheduler's cache of whole job results (in the server), and :data:`SUB_RESULTS`,
the sub-results a job keeps for the next one (one method's certificate, one method's votes) in
the process the work runs in: a worker process, which lives between jobs, or the server for work
that runs in a thread.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

ENTRIES = 256


class ResultCache:
    """At most ``size`` values by key; the least recently used goes first."""

    def __init__(self, size: int = ENTRIES) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._values: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable) -> tuple[bool, Any]:
        """``(True, value)`` when ``key`` is kept, else ``(False, None)``."""
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return True, self._values[key]
        return False, None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.size:
                self._values.popitem(last=False)

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value kept for ``key``, computed (and kept) only when there is none."""
        hit, value = self.get(key)
        if hit:
            return value
        value = compute()
        self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


SUB_RESULTS = ResultCache()
