"""Background jobs: long computations run beside the page, not inside it.

Why: a computation in the script thread dies with the run, so any click or page switch threw it
away. Here a page hands a job its *work* (a function of a progress callback that calls only the
library, never streamlit) and a *deliver* function (run later in the script thread, to store the
result in session state). Each job has a thread that only writes to the :class:`Job` object; the
work itself runs in a worker process when it can be pickled (:mod:`dsmooth_lab_ui.worker`: pages
pass ``functools.partial`` of :mod:`dsmooth_lab_ui.tasks`), else in that thread. Every run of
the app calls :func:`collect`, which delivers a finished job's result in the session that owns it,
and :func:`panel` shows the job on every page, polling with ``st.fragment(run_every=...)``.

Rules:

- One job per browser session at a time (kept in that session's state, so no session sees
  another's). Starting a job with the inputs of the session's running job reuses it; inputs whose
  result is in the process-wide result cache (as ``st.cache_data`` did) deliver at once.
- A process-wide limit (``DSMOOTH_JOB_SLOTS``, default 1) on jobs computing at once; the others
  wait in order and are shown as queued, so several sessions share the cores instead of fighting.
- Cancel sets a flag that the work's progress callback returns, so the library raises
  :class:`dsmooth_core.Cancelled` at its next batch. A cancelled or failed job delivers nothing.
- Each job runs with torch's intra-op threads chosen by :mod:`dsmooth_lab_ui.threads`.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
import torch

from dsmooth_core import Cancelled
from dsmooth_lab_ui import threads, worker

SESSION_JOB = "dsl_job"  # the session's current or last Job
_FULL_RUN = threading.local()  # .drawing: the panel's fragment is being called inside a full run
POLL_SECONDS = 1.0  # progress redraws; a finished job reruns the page at once (jobs.changed_within)
CANCEL_WAIT_SECONDS = 2.0  # a batch of the bundled model on one CPU thread takes about 0.2 s
QUEUED_POLL_SECONDS = 3.0  # a queued job changes rarely; polling less leaves the cores to the running one
RESULTS_KEPT = 256
SLOTS_ENV = "DSMOOTH_JOB_SLOTS"

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
NOTHING_KEPT = "Nothing from it was kept."
# Jobs that go method by method keep each finished method's result in the cache (``memo``).
METHODS_KEPT = "The methods it had finished are kept and come back at once when you run it again."


@dataclass(eq=False)
class Job:
    """One computation and what the worker reports about it (written under ``lock`` only)."""

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
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    delivered: bool = False
    number: int = 0
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
    """The ``(done, total) -> stop?`` callback a job's work gives the library; ``stage`` names the step."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def stage(self, label: str) -> None:
        with self.job.lock:
            self.job.step, self.job.done, self.job.total = label, 0, 0

    def __call__(self, done: int, total: int) -> bool:
        with self.job.lock:
            self.job.done, self.job.total = done, total
        return self.job.cancel.is_set()


class JobManager:
    """Process-wide: the queue of jobs waiting for a slot, the slots, and the result cache."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._cond = threading.Condition()
        self._waiting: list[Job] = []
        self._running = 0
        self._results: OrderedDict[Hashable, Any] = OrderedDict()
        self._numbers = itertools.count(1)
        self.workers = worker.WorkerPool()

    # ------------------------------------------------ results
    def cached(self, key: Hashable) -> tuple[bool, Any]:
        with self._cond:
            if key in self._results:
                self._results.move_to_end(key)
                return True, self._results[key]
        return False, None

    def remember(self, key: Hashable, value: Any) -> None:
        with self._cond:
            self._results[key] = value
            self._results.move_to_end(key)
            while len(self._results) > RESULTS_KEPT:
                self._results.popitem(last=False)

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """A sub-result of a job (e.g. one method's certificate), computed once per key."""
        hit, value = self.cached(key)
        if hit:
            return value
        value = compute()
        self.remember(key, value)
        return value

    def clear(self) -> None:
        with self._cond:
            self._results.clear()
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
        try:
            with job.lock:
                job.state, job.started = RUNNING, time.monotonic()
            job.began.set()
            result = self._execute(job)
        except Cancelled:
            _finish(job, CANCELLED)
        except Exception as exc:  # shown on the page; nothing is delivered
            _finish(job, FAILED, error=str(exc) or type(exc).__name__)
        else:
            if job.cache:
                self.remember(job.key, result)
            _finish(job, DONE, result=result)
        finally:
            self._release()

    def _execute(self, job: Job) -> Any:
        """The work in a worker process when it can be pickled, else in this thread."""
        data = worker.payload(job.work)
        if data is not None:
            return self.workers.run(data, job.threads, Progress(job), job.cancel)
        previous = torch.get_num_threads()
        torch.set_num_threads(job.threads)  # per job: the library takes no thread decisions
        try:
            return job.work(Progress(job))
        finally:
            torch.set_num_threads(previous)


def _finish(job: Job, state: str, result: Any = None, error: str | None = None) -> None:
    with job.lock:
        job.state, job.result, job.error = state, result, error
        job.finished = time.monotonic()
        if job.started is None:
            job.started = job.finished
    job.began.set()
    job.ended.set()


def _slots() -> int:
    raw = os.environ.get(SLOTS_ENV, "1")
    try:
        return max(1, int(raw))
    except ValueError:
        return 1


MANAGER = JobManager(_slots())


# ---------------------------------------------------------------- the session's side (script thread)
def current() -> Job | None:
    return st.session_state.get(SESSION_JOB)


def start(
    kind: str,
    title: str,
    key: Hashable,
    work: Callable[[Progress], Any],
    deliver: Callable[[Any], None],
    batch: int = 1,
    on_error: Callable[[str], None] | None = None,
    kept: str = NOTHING_KEPT,
    cache: bool = True,
) -> Job | None:
    """Start ``work`` in the background, or reuse a running job or a cached result with equal inputs.

    A new job reruns the script (so the panel at the top shows it) and does not return. Otherwise
    returns the running job with these inputs, or ``None`` when the cached result has just been
    delivered or when another job of this session is still running (a warning then says so).
    """
    key = (kind, key)
    job = current()
    if job is not None and job.active:
        if job.key == key:
            return job
        st.warning(
            f"{job.title} is still running: wait for it or cancel it before starting another job.",
            icon=":material/hourglass_top:",
        )
        return None
    hit, result = MANAGER.cached(key) if cache else (False, None)
    if hit:
        deliver(result)
        st.session_state.pop(SESSION_JOB, None)
        return None
    job = Job(
        kind=kind,
        title=title,
        key=key,
        work=work,
        deliver=deliver,
        on_error=on_error,
        kept=kept,
        cache=cache,
        threads=threads.for_batch(batch),
    )
    st.session_state[SESSION_JOB] = job
    MANAGER.submit(job)
    st.rerun()  # draw the page again, with the job's panel at the top


def collect() -> None:
    """Deliver the session's finished job once (call at the start of every run of the app)."""
    job = current()
    if job is None or job.active or job.delivered:
        return
    job.delivered = True
    if job.state == DONE:
        job.deliver(job.result)
    elif job.state == FAILED and job.on_error is not None:
        job.on_error(job.error or "")


def request_cancel() -> None:
    """``on_click`` of the Cancel button: the work stops at its next progress report.

    Waits for that (at most ``CANCEL_WAIT_SECONDS``) so the run the click starts already shows the
    outcome; without the wait it showed the job still running until the panel's next poll, 1-1.4 s.
    """
    job = current()
    if job is not None:
        job.cancel.set()
        job.ended.wait(CANCEL_WAIT_SECONDS)


def describe(job: Job) -> str:
    """One line about the job's state, for the panel."""
    with job.lock:
        state, done, total, step = job.state, job.done, job.total, job.step
    seconds = job.seconds()
    where = f"{step}: " if step else ""
    if state == QUEUED:
        return f"{job.title}: queued, {MANAGER.ahead_of(job)} job(s) ahead (other sessions share the cores)"
    if state == RUNNING:
        count = f"{done:,} / {total:,}" if total else "starting"
        return f"{job.title} ({where}{count}, {seconds:.0f} s, {job.threads} thread(s))"
    if state == DONE:
        return f"{job.title}: done in {seconds:.1f} s"
    if state == CANCELLED:
        after = f" after {done:,} of {total:,} steps ({step})" if total else ""
        return f"Cancelled: {job.title} stopped{after}. {job.kept}"
    return f"{job.title} failed: {job.error}. {job.kept}"


def panel() -> None:
    """Show the session's job on every page: live progress and Cancel while it runs, then its outcome.

    Cancel sits outside the progress fragment: a click on it is a full rerun, which Streamlit starts
    at once even while the fragment waits (see :func:`changed_within`); a click inside the fragment
    would queue behind that wait.
    """
    job = current()
    if job is None:
        return
    if job.active:
        every = POLL_SECONDS if job.state == RUNNING else QUEUED_POLL_SECONDS
        with st.container(border=True, key="dsl_job_panel"):
            left, right = st.columns([5, 1], vertical_alignment="center")
            with left:
                _FULL_RUN.drawing = True  # the fragment's first call belongs to this full run: it must not wait
                try:
                    st.fragment(run_every=every)(_live)(job.state, every)
                finally:
                    _FULL_RUN.drawing = False
            right.button("Cancel", key="dsl_job_cancel", icon=":material/stop_circle:", on_click=request_cancel)
    elif job.state == CANCELLED:
        st.warning(describe(job), icon=":material/cancel:")
    elif job.state == FAILED:
        st.error(describe(job), icon=":material/error:")
    else:
        st.caption(describe(job))


def changed_within(job: Job, drawn_state: str, seconds: float) -> bool:
    """Whether the job leaves ``drawn_state`` (QUEUED or RUNNING) within ``seconds``; returns as soon as it does.

    Why: polling alone shows a finished job up to one poll late (half a poll on average; 0.39 s in
    one measured 3 s attack). The fragment's own reruns wait here instead and rerun the app the
    moment the job changes, so the result lands as soon as it exists.
    """
    return (job.began if drawn_state == QUEUED else job.ended).wait(seconds)


def _live(drawn_state: str, every: float) -> None:
    job = current()
    if job is None or job.state != drawn_state:
        st.rerun()  # started or finished: a full run polls at the new rate, or delivers the result
        return
    with job.lock:
        fraction = job.done / job.total if job.total else 0.0
    st.progress(min(max(fraction, 0.0), 1.0), text=describe(job))
    if not getattr(_FULL_RUN, "drawing", False) and changed_within(job, drawn_state, every):
        st.rerun()
