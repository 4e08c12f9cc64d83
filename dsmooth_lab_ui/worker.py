"""Job work in worker processes, so a computation never waits for the Streamlit server's GIL.

Why: a job in a thread of the server shares one interpreter lock with the server, which reruns
the job panel every poll, serializes every message to the browser and draws the page. Batch-1
loops such as Square's queries hand the lock back and forth thousands of times and ran about
1.7x slower in the app than in a quiet process. A worker process has its own interpreter.

A job's work goes to a worker when it can be pickled: a ``functools.partial`` of a module-level
function (``dsmooth_lab_ui.tasks``) with picklable arguments (the model, tensors, noise objects).
Work that cannot be pickled (a closure, a TorchScript upload) runs in a thread as before; so
does all work when ``DSMOOTH_JOB_PROCESSES=0``. Workers are started once (``spawn``, so no torch
state is forked), kept between jobs, and started again if one dies.

Messages from a worker: ``("stage", label)``, ``("progress", done, total)``, then one of
``("done", result)``, ``("cancelled",)`` or ``("failed", message)``. Cancel sends ``("cancel",)``,
which the worker's progress callback reads and returns, so the library stops at its next batch.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from dsmooth_core import Cancelled

ENV = "DSMOOTH_JOB_PROCESSES"
PROGRESS_EVERY = 0.25  # seconds between progress messages (the panel redraws once a second)
POLL = 0.1  # how often the job's thread checks Cancel and the worker's health while waiting


class WorkerFailed(RuntimeError):
    """The work raised in the worker, or the worker died; the message is the page's."""


class ProgressSink(Protocol):
    def stage(self, label: str) -> None: ...

    def __call__(self, done: int, total: int) -> bool: ...


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip() not in ("0", "false", "no", "off")


def payload(work: Callable[..., Any]) -> bytes | None:
    """``work`` pickled for a worker, or ``None`` when it must run in a thread (not picklable, or off)."""
    if not enabled():
        return None
    try:
        return pickle.dumps(work, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # closures, TorchScript and other programs: whatever pickle refuses runs in a thread
        return None


def _send(conn: Connection, message: tuple) -> None:
    # plain pickle: Connection.send's ForkingPickler would share tensors through file descriptors
    # and multiprocessing's authentication, which a plain subprocess does not have
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _receive(conn: Connection) -> tuple:
    return pickle.loads(conn.recv_bytes())


# ---------------------------------------------------------------- the worker process
class _Reporter:
    """The progress callback inside a worker: throttled messages out; a "cancel" from the server stops."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.last, self.cancelled = conn, 0.0, False

    def stage(self, label: str) -> None:
        _send(self.conn, ("stage", label))

    def __call__(self, done: int, total: int) -> bool:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY or done >= total:
            self.last = now
            _send(self.conn, ("progress", done, total))
        while not self.cancelled and self.conn.poll():
            self.cancelled = _receive(self.conn)[0] == "cancel"
        return self.cancelled


def serve(conn: Connection) -> None:
    """A worker's loop: one job at a time, until the server closes the connection."""
    import torch

    from dsmooth_lab_ui import jobs, tasks  # noqa: F401  (imported now so the first job does not wait for it)

    # The imports leave about 275,000 long-lived objects; the first full collection walks them all
    # (0.13 s quiet, 0.2 s of the first job beside a browser, measured). Frozen, they are never walked.
    gc.collect()
    gc.freeze()

    while True:
        try:
            message = _receive(conn)
        except (EOFError, OSError):
            return
        if message[0] != "run":  # "clear", or a "cancel" that came after its job had ended
            if message[0] == "clear":
                jobs.MANAGER.clear()
            continue
        _, threads, data = message
        torch.set_num_threads(threads)
        try:
            result = pickle.loads(data)(_Reporter(conn))
        except Cancelled:
            _send(conn, ("cancelled",))
            continue
        except Exception as exc:  # the page shows the message
            _send(conn, ("failed", str(exc) or type(exc).__name__))
            continue
        try:
            _send(conn, ("done", result))
        except Exception as exc:  # a result that cannot travel back
            _send(conn, ("failed", f"the result could not be sent back from the worker: {exc}"))


# ---------------------------------------------------------------- the server's side
class Worker:
    """One worker process (``python -m dsmooth_lab_ui.worker``) and the connection to it.

    A plain subprocess rather than ``multiprocessing.Process``: spawn would import the server's
    ``__main__`` again in the child, and fork would copy the server's torch and thread state.
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()  # private to the two processes: no address, no key
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the server's imports
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.busy = False  # a job was sent and its last message has not come back

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, data: bytes, threads: int, progress: ProgressSink, cancelled: threading.Event) -> Any:
        """Run pickled work; report to ``progress``; raise Cancelled or WorkerFailed as the work did."""
        _send(self.conn, ("run", threads, data))
        self.busy, asked_to_cancel = True, False
        while True:
            if cancelled.is_set() and not asked_to_cancel:
                _send(self.conn, ("cancel",))
                asked_to_cancel = True
            if not self.conn.poll(POLL):
                if not self.alive():
                    raise self._died()
                continue
            try:
                message = _receive(self.conn)
            except (EOFError, OSError) as exc:
                raise self._died() from exc
            kind = message[0]
            self.busy = kind in ("stage", "progress")
            if kind == "stage":
                progress.stage(message[1])
            elif kind == "progress":
                progress(message[1], message[2])
            elif kind == "done":
                return message[1]
            elif kind == "cancelled":
                raise Cancelled("cancelled")
            else:
                raise WorkerFailed(message[1])

    def _died(self) -> WorkerFailed:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # the connection broke but the process lives on: end it
            self.process.kill()
            code = self.process.wait()
        return WorkerFailed(
            f"the worker process stopped unexpectedly (exit code {code}); it is restarted for the next job"
        )

    def clear(self) -> None:
        with contextlib.suppress(OSError):  # a dead idle worker: the next job replaces it
            _send(self.conn, ("clear",))

    def stop(self) -> None:
        self.conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


class WorkerPool:
    """Idle workers, handed to one job at a time (at most as many as the job slots)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Worker] = []
        self._warmed = False

    def warm(self) -> None:
        """Start a worker ahead of the first job (once), so its imports do not delay that job."""
        with self._lock:
            if self._warmed or not enabled():
                return
            self._warmed = True
            self._idle.append(Worker())

    def run(self, data: bytes, threads: int, progress: ProgressSink, cancelled: threading.Event) -> Any:
        worker = self._take()
        try:
            return worker.run(data, threads, progress, cancelled)
        finally:
            self._give_back(worker)

    def clear(self) -> None:
        """Forget the idle workers' cached sub-results (the manager's cache is cleared beside it)."""
        with self._lock:
            for worker in self._idle:
                worker.clear()

    def close(self) -> None:
        """Stop the idle workers (tests, shutdown); a worker busy with a job is left to finish it."""
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()

    def _take(self) -> Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
        return Worker()

    def _give_back(self, worker: Worker) -> None:
        if worker.busy or not worker.alive():  # left mid-job (the server side failed): never reuse it
            worker.stop()
            return
        with self._lock:
            self._idle.append(worker)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's; the worker ends when its connection closes
    serve(Connection(int(sys.argv[1])))
