"""The process-wide job scheduler: the queue, the slots, the job objects, the result cache, the workers.

Why apart from the page side (:mod:`dsmooth_lab_ui.jobs`): the scheduler is plain Python (no
streamlit), so it is tested, and could be driven, without an app. A job's *work* is a function of
a progress callback that calls only the library (pages pass ``functools.partial`` of
:mod:`dsmooth_lab_ui.tasks`); it runs in a worker process (:mod:`dsmooth_lab_ui.pool`), or, when it
cannot be pickled or processes are off, in a thread of the server. Each job has a thread here that
waits for a slot, hands the work on and writes only to its :class:`Job`.

Rules:

- A process-wide limit (``DSMOOTH_JOB_SLOTS``, default 1) on jobs computing at once; the others
  wait in order and are shown as queued, so several sessions share the cores instead of fighting.
- Cancel sets a flag that the work's progress callback returns, so the library raises
  :class:`dsmooth_core.Cancelled` at its next batch. A cancelled or failed job delivers nothing.
- Work that does not stop within the grace after Cancel, or sends no progress report for the
  stall limit, is ended by force (:mod:`dsmooth_lab_ui.watchdog`) and the queue moves on.
- Each job runs with torch's intra-op threads chosen by :mod:`dsmooth_lab_ui.threads`.
- Finished results are kept by their inputs' key (``cached``), so equal inputs need no new job; a job
  whose equal was ahead of it in the queue takes that result when its turn comes instead of computing.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import torch

from dsmooth_core import Cancelled
from dsmooth_lab_ui import memo, pool, threads, watchdog
from dsmooth_lab_ui.watchdog import ForcedCancel, Limits, NoProgress, Watch

RESULTS_KEPT = 256
SLOTS_ENV = "DSMOOTH_JOB_SLOTS"
# One job computes at a time unless DSMOOTH_JOB_SLOTS says otherwise. Measured with 30 browser sessions
# that attack and certify within a minute on the 2-core machine (benchmarks/bench_classroom.py): with the
# app's defaults, every student's job is the same, and 2 slots computed it twice at once (an equal job
# takes the first one's result only when it queues behind it), each run 2-3 times slower, in the same
# total time (267 s against 257 s), with a longer certify wait (p95 58 s against 29 s) and twice the
# workers' memory (943 MB against 469 MB): results/bench_classroom-20261206T065224Z.json (1 slot) and
# ...T065953Z.json (2). With a seed per student (every job real work, 200 queries, n = 200), 2 slots
# ended sooner (261 s against 363 s, p95 waits 52 s against 91 s) but at a quarter of the other run's
# machine load (load average 2.5 against 10.2 before it) and with twice the memory: ...T073738Z.json
# (2 slots) and ...T071513Z.json (1); that gain is not the slots' alone. A server with more cores may set 2.
DEFAULT_SLOTS = 1
POLL = 0.1  # how often a thread-run job's own thread checks Cancel and the watchdog

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
NOTHING_KEPT = "Nothing from it was kept."
# Jobs that go method by method keep each finished method's result (``memo.SUB_RESULTS`` where the work runs).
METHODS_KEPT = "The methods it had finished are kept and come back at once when you run it again."
IN_THREAD = (
    "it runs in a thread of the server (its work could not be sent to a worker process), which cannot be "
    "ended: the job is closed and its result will be dropped"
)


@dataclass(eq=False)
class Job:
    """One computation and what its work reports about it (written under ``lock`` only)."""

    kind: str  # the page's job name, e.g. "certify"
    title: str
    key: Hashable  # the inputs: equal keys mean equal results
    work: Callable[[Progress], Any]
    deliver: Callable[[Any], None]
    threads: int
    on_error: Callable[[str], None] | None = None
    kept: str = NOTHING_KEPT  # what survives a cancel or failure (said in the panel)
    cache: bool = True  # False for work whose result depends on more than its key (e.g. files it appends to)
    state: str = QUEUED
    done: int = 0
    total: int = 0
    step: str = ""
    result: Any = None
    error: str | None = None  # why it failed, or how a cancel was forced
    started: float | None = None
    finished: float | None = None
    delivered: bool = False
    number: int = 0
    worker_pid: int | None = None  # the worker process that ran it; None: a thread of the server
    cancel: threading.Event = field(default_factory=threading.Event)
    began: threading.Event = field(default_factory=threading.Event)  # the state left QUEUED
    ended: threading.Event = field(default_factory=threading.Event)  # the state left RUNNING (or QUEUED, cancelled)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started


class Progress:
    """The ``(done, total) -> stop?`` callback a job's work gets; ``stage`` names the step.

    Reports that come after the job has ended (work in a thread that was closed by force) change
    nothing and are told to stop.
    """

    def __init__(self, job: Job, watch: Watch | None = None) -> None:
        self.job, self.watch = job, watch

    def stage(self, label: str) -> None:
        if self.job.ended.is_set():
            return
        with self.job.lock:
            self.job.step, self.job.done, self.job.total = label, 0, 0
        if self.watch is not None:
            self.watch.heard_from()

    def __call__(self, done: int, total: int) -> bool:
        if self.job.ended.is_set():
            return True
        with self.job.lock:
            self.job.done, self.job.total = done, total
        if self.watch is not None:
            self.watch.heard_from()
        return self.job.cancel.is_set()


def changed_within(job: Job, drawn_state: str, seconds: float) -> bool:
    """Whether the job leaves ``drawn_state`` (QUEUED or RUNNING) within ``seconds``; returns as soon as it does.

    Why: polling alone shows a finished job up to one poll late (half a poll on average; 0.39 s in
    one measured 3 s attack). The panel's fragment waits here instead and reruns the app the
    moment the job changes, so the result lands as soon as it exists.
    """
    return (job.began if drawn_state == QUEUED else job.ended).wait(seconds)


class JobManager:
    """Process-wide: the queue of jobs waiting for a slot, the slots, the result cache and the workers.

    ``limits``: the watchdog's; ``None`` reads them from the environment at each job's start.
    """

    def __init__(self, slots: int, limits: Limits | None = None) -> None:
        self.slots = slots
        self.limits = limits
        self._cond = threading.Condition()
        self._waiting: list[Job] = []
        self._running = 0
        self._results = memo.ResultCache(RESULTS_KEPT)
        self._numbers = itertools.count(1)
        self.workers = pool.WorkerPool()

    # ------------------------------------------------ results
    def cached(self, key: Hashable) -> tuple[bool, Any]:
        return self._results.get(key)

    def remember(self, key: Hashable, value: Any) -> None:
        self._results.put(key, value)

    def clear(self) -> None:
        """Forget every kept result: whole jobs', and the sub-results here and in the idle workers."""
        self._results.clear()
        memo.SUB_RESULTS.clear()
        self.workers.clear()

    # ------------------------------------------------ queue
    def submit(self, job: Job) -> None:
        with self._cond:
            job.number = next(self._numbers)
            self._waiting.append(job)
        threading.Thread(target=self._run, args=(job,), name=f"dsl-job-{job.number}", daemon=True).start()

    def ahead_of(self, job: Job) -> int:
        """How many jobs compute or wait before ``job`` (0 once it runs)."""
        with self._cond:
            if job not in self._waiting:
                return 0
            return self._running + self._waiting.index(job)

    def place_in_line(self, job: Job) -> int | None:
        """``job``'s place among the jobs that compute or wait (1: next to start), or ``None`` once it left the queue.

        Why: a class of thirty pressing Certify within a minute waits minutes; each session is shown
        where it stands (the panel's "3rd in line"), so a long wait is seen to move.
        """
        with self._cond:
            return self._place(job)

    def queue_moved(self, job: Job, drawn_place: int | None, seconds: float) -> bool:
        """Whether ``job``'s place differs from ``drawn_place`` within ``seconds``; returns as soon as it does.

        Why: the queued panel then redraws the moment a job ahead ends (or this one starts), not at its next poll.
        """
        deadline = time.monotonic() + seconds
        with self._cond:
            while self._place(job) == drawn_place:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)  # notified when a slot frees or a waiting job is cancelled
            return True

    def _place(self, job: Job) -> int | None:
        if job not in self._waiting:
            return None
        return self._running + self._waiting.index(job) + 1

    def running_count(self) -> int:
        with self._cond:
            return self._running

    def _wait_for_slot(self, job: Job) -> bool:
        with self._cond:
            while True:
                if job.cancel.is_set():
                    self._waiting.remove(job)
                    self._cond.notify_all()
                    return False
                if self._running < self.slots and self._waiting[0] is job:
                    self._waiting.pop(0)
                    self._running += 1
                    return True
                self._cond.wait(0.2)

    def _release(self) -> None:
        with self._cond:
            self._running -= 1
            self._cond.notify_all()

    def _run(self, job: Job) -> None:
        if not self._wait_for_slot(job):
            _finish(job, CANCELLED)
            return
        hit, result = self.cached(job.key) if job.cache else (False, None)
        if hit:  # an equal job that was ahead in the queue computed it (a class pressing Certify with the defaults)
            _finish(job, DONE, result=result)
            self._release()
            return
        try:
            with job.lock:
                job.state, job.started = RUNNING, time.monotonic()
            job.began.set()
            result = self._execute(job, self.limits or watchdog.from_environment())
        except ForcedCancel as exc:
            _forget_kept_methods(job)
            _finish(job, CANCELLED, error=str(exc))
        except Cancelled:
            _finish(job, CANCELLED)
        except NoProgress as exc:
            _forget_kept_methods(job)
            _finish(job, FAILED, error=str(exc))
        except Exception as exc:  # shown on the page; nothing is delivered
            _finish(job, FAILED, error=str(exc) or type(exc).__name__)
        else:
            if job.cache:
                self.remember(job.key, result)
            _finish(job, DONE, result=result)
        finally:
            self._release()

    def _execute(self, job: Job, limits: Limits) -> Any:
        """The work in a worker process when it can be pickled, else in a thread of its own."""
        data = pool.payload(job.work)
        if data is None:
            return _in_thread(job, limits)

        def started_in(pid: int) -> None:
            job.worker_pid = pid

        return self.workers.run(data, job.threads, Progress(job), job.cancel, limits, started_in)


def _in_thread(job: Job, limits: Limits) -> Any:
    """Run the work in a thread of the server, watched; a thread cannot be killed, so an overdue one is left."""
    watch = Watch(limits)
    outcome: dict[str, Any] = {}
    finished = threading.Event()

    def target() -> None:
        previous = torch.get_num_threads()
        torch.set_num_threads(job.threads)  # per job: the library takes no thread decisions
        try:
            with threads.lending_spare_cores(job.threads):
                outcome["result"] = job.work(Progress(job, watch))
        except BaseException as exc:  # handed to the job's thread, which reports it
            outcome["error"] = exc
        finally:
            torch.set_num_threads(previous)
            finished.set()

    threading.Thread(target=target, name=f"dsl-work-{job.number}", daemon=True).start()
    while not finished.wait(POLL):
        if job.cancel.is_set():
            watch.cancel_asked()
        ended = watch.overdue(IN_THREAD)
        if ended is not None:
            job.cancel.set()  # should it ever report again, it is told to stop
            raise ended
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def _forget_kept_methods(job: Job) -> None:
    """A job ended by force in a worker: the methods it had finished were kept in the process that was killed."""
    if job.worker_pid is not None and job.kept == METHODS_KEPT:
        job.kept = NOTHING_KEPT


def _finish(job: Job, state: str, result: Any = None, error: str | None = None) -> None:
    with job.lock:
        job.state, job.result, job.error = state, result, error
        job.finished = time.monotonic()
        if job.started is None:
            job.started = job.finished
    job.began.set()
    job.ended.set()


def _slots() -> int:
    raw = os.environ.get(SLOTS_ENV, str(DEFAULT_SLOTS))
    try:
        return max(1, int(raw))
    except ValueError:
        return DEFAULT_SLOTS


MANAGER = JobManager(_slots())
