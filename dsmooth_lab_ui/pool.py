"""The server's side of the worker processes (:mod:`dsmooth_lab_ui.worker`): start, feed, watch, end.

A job's work goes to a worker when it can be pickled: a ``functools.partial`` of a
:mod:`dsmooth_lab_ui.tasks` function with picklable arguments (the model, tensors, noise objects).
TorchScript and torch.export models go as their program bytes (:mod:`dsmooth_lab_ui.programs`).
Work that still cannot be pickled runs in a thread of the server (:mod:`dsmooth_lab_ui.scheduler`);
so does all work when ``DSMOOTH_JOB_PROCESSES=0``. Workers are started once, kept between jobs,
and started again if one dies. While a job runs, its worker is watched
(:mod:`dsmooth_lab_ui.watchdog`): one that does not answer Cancel in time, or sends no progress
report for the stall limit, is killed, and a fresh one is started in its place.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from dsmooth_core import Cancelled
from dsmooth_lab_ui import programs
from dsmooth_lab_ui.progress import JobProgress
from dsmooth_lab_ui.watchdog import Limits, Watch
from dsmooth_lab_ui.worker import receive, send

ENV = "DSMOOTH_JOB_PROCESSES"
WORKER_MODULE = "dsmooth_lab_ui.worker"
POLL = 0.1  # how often the job's thread checks Cancel and the worker's health while waiting
# a new worker's imports take 2-10 s (more on a busy machine); the stall limit counts only once it is ready
START_SECONDS = 180.0


class WorkerFailed(RuntimeError):
    """The work raised in the worker, or the worker died; the message is the page's."""


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip() not in ("0", "false", "no", "off")


class _ProgramPickler(pickle.Pickler):
    """Pickles user programs as their saved bytes (:func:`programs.reduce`), everything else as pickle does."""

    def reducer_override(self, obj: Any) -> Any:
        reduced = programs.reduce(obj)
        return NotImplemented if reduced is None else reduced


def payload(work: Callable[..., Any]) -> bytes | None:
    """``work`` pickled for a worker, or ``None`` when it must run in a thread (not picklable, or off)."""
    if not enabled():
        return None
    buffer = io.BytesIO()
    try:
        _ProgramPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(work)
    except Exception:  # a closure or another object pickle refuses: the work runs in a thread
        return None
    return buffer.getvalue()


class Worker:
    """One worker process (``python -m dsmooth_lab_ui.worker``) and the connection to it.

    A plain subprocess rather than ``multiprocessing.Process``: spawn would import the server's
    ``__main__`` again in the child, and fork would copy the server's torch and thread state.
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()  # private to the two processes: no address, no key
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # the server's imports
        self.process = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(theirs.fileno())], pass_fds=[theirs.fileno()], env=env
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.started = time.monotonic()
        self.ready = False  # its imports are done ("ready" came)
        self.busy = False  # a job was sent and its last message has not come back
        self.killed = False  # ended by the watchdog: the pool starts a fresh one in its place
        self._sender: threading.Thread | None = None  # sends the current job's work

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, data: bytes, threads: int, progress: JobProgress, cancelled: threading.Event, limits: Limits) -> Any:
        """Run pickled work; report to ``progress``; raise as the work did, or as the watchdog ended it."""
        watch = Watch(limits)
        self.busy = True
        # sent beside the watch: a large payload fills the socket and waits for a worker that reads it,
        # which a stopped or still-importing worker does not
        self._sender = threading.Thread(target=self._send, args=(("run", threads, data),), daemon=True)
        self._sender.start()
        cancel_sent = False
        while True:
            if cancelled.is_set():
                watch.cancel_asked()
                if not cancel_sent and not self._sender.is_alive():  # one writer at a time on the socket
                    self._send(("cancel",))
                    cancel_sent = True
            if not self.ready:
                watch.heard_from()  # still importing: no work to report yet
                if time.monotonic() - self.started > START_SECONDS:
                    self.kill()
                    raise WorkerFailed(f"the worker process did not start within {START_SECONDS:g} s")
            ended = watch.overdue(f"its worker process (pid {self.pid}) was ended")
            if ended is not None:
                self.kill()
                raise ended
            if not self.conn.poll(POLL):
                if not self.alive():
                    raise self._died()
                continue
            try:
                message = receive(self.conn)
            except (EOFError, OSError) as exc:
                raise self._died() from exc
            watch.heard_from()
            kind = message[0]
            if kind == "ready":
                self.ready = True
                continue
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

    def _send(self, message: tuple) -> None:
        with contextlib.suppress(OSError):  # a dead worker: the next poll finds it and says so
            send(self.conn, message)

    def _died(self) -> WorkerFailed:
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # the connection broke but the process lives on: end it
            self.process.kill()
            code = self.process.wait()
        return WorkerFailed(
            f"the worker process stopped unexpectedly (exit code {code}); it is restarted for the next job"
        )

    def kill(self) -> None:
        """End the process at once (it may be stopped or busy in code that never returns)."""
        self.killed = True
        self.process.kill()  # SIGKILL also ends a stopped (SIGSTOP) process
        self.process.wait()
        if self._sender is not None:
            self._sender.join(5)  # its write fails now that the reader is gone
        self.conn.close()

    def clear(self) -> None:
        self._send(("clear",))

    def stop(self) -> None:
        """Close the connection, which ends the worker's loop; one still busy (importing) is killed."""
        self.conn.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


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

    def run(
        self,
        data: bytes,
        threads: int,
        progress: JobProgress,
        cancelled: threading.Event,
        limits: Limits,
        on_start: Callable[[int], None] = lambda pid: None,
    ) -> Any:
        """Run pickled work in an idle worker (a new one if none); ``on_start`` gets its process id."""
        worker = self._take()
        on_start(worker.pid)
        try:
            return worker.run(data, threads, progress, cancelled, limits)
        finally:
            self._give_back(worker)

    def clear(self) -> None:
        """Forget the idle workers' kept sub-results (the scheduler's cache is cleared beside it)."""
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
        if worker.killed:  # its replacement starts its imports now, before the next job needs it
            with self._lock:
                self._idle.append(Worker())
            return
        if worker.busy or not worker.alive():  # left mid-job (the server side failed): never reuse it
            worker.stop()
            return
        with self._lock:
            self._idle.append(worker)
