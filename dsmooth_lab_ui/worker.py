"""A worker process: runs one job's work at a time, for the server's :mod:`dsmooth_lab_ui.pool`.

Why a process: a job in a thread of the server shares one interpreter lock with the server, which
reruns the job panel every poll, serializes every message to the browser and draws the page.
Batch-1 loops such as Square's queries hand the lock back and forth thousands of times and ran
about 1.7x slower in the app than in a quiet process. And a process can be ended: a model that
never returns, in a thread, would hold its job for good.

This module imports only what the work needs (torch, the library, :mod:`dsmooth_lab_ui.tasks`):
no streamlit and no scheduler. Started as ``python -m dsmooth_lab_ui.worker FD``, it talks over
the socket ``FD``. Messages to it: ``("run", threads, pickled work)``, ``("cancel",)``,
``("clear",)``. Messages from it: ``("ready",)`` once its imports are done; then, for each job,
``("stage", label)`` and ``("progress", done, total)``, then one of ``("done", result)``,
``("cancelled",)`` or ``("failed", message)``. A "cancel" is read by the work's progress
callback, which returns it, so the library stops at its next batch.
"""

from __future__ import annotations

import gc
import pickle
import signal
import sys
import time
from multiprocessing.connection import Connection

from dsmooth_core import Cancelled

PROGRESS_EVERY = 0.25  # seconds between progress messages (the panel redraws once a second)


def send(conn: Connection, message: tuple) -> None:
    # plain pickle: Connection.send's ForkingPickler would share tensors through file descriptors
    # and multiprocessing's authentication, which a plain subprocess does not have
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn: Connection) -> tuple:
    return pickle.loads(conn.recv_bytes())


class _Reporter:
    """The progress callback inside a worker: throttled messages out; a "cancel" from the server stops."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.last, self.cancelled = conn, 0.0, False

    def stage(self, label: str) -> None:
        send(self.conn, ("stage", label))

    def __call__(self, done: int, total: int) -> bool:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY or done >= total:
            self.last = now
            send(self.conn, ("progress", done, total))
        while not self.cancelled and self.conn.poll():
            self.cancelled = receive(self.conn)[0] == "cancel"
        return self.cancelled


def serve(conn: Connection) -> None:
    """A worker's loop: one job at a time, until the server closes the connection."""
    import torch

    from dsmooth_lab_ui import memo, tasks  # imported now, so the first job does not wait for them
    from dsmooth_lab_ui.threads import lending_spare_cores

    # The imports leave about 275,000 long-lived objects; the first full collection walks them all
    # (0.13 s quiet, 0.2 s of the first job beside a browser, measured). Frozen, they are never walked.
    gc.collect()
    gc.freeze()
    send(conn, ("ready",))

    while True:
        try:
            message = receive(conn)
        except (EOFError, OSError):
            return
        if message[0] != "run":  # "clear", or a "cancel" that came after its job had ended
            if message[0] == "clear":
                memo.SUB_RESULTS.clear()
                tasks.forget_data()
            continue
        _, threads, data = message
        torch.set_num_threads(threads)
        try:
            with lending_spare_cores(threads):
                result = pickle.loads(data)(_Reporter(conn))
        except Cancelled:
            send(conn, ("cancelled",))
            continue
        except Exception as exc:  # the page shows the message
            send(conn, ("failed", str(exc) or type(exc).__name__))
            continue
        try:
            send(conn, ("done", result))
        except Exception as exc:  # a result that cannot travel back
            send(conn, ("failed", f"the result could not be sent back from the worker: {exc}"))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's; the worker ends when its connection closes
    serve(Connection(int(sys.argv[1])))
