"""The session's side of background jobs: start one from a page, show it, hand its result over.

Why: a computation in the script thread dies with the run, so any click or page switch threw it
away. Here a page hands :func:`start` the job's *work* (a ``functools.partial`` of a
:mod:`dsmooth_lab_ui.tasks` function, computed by :mod:`dsmooth_lab_ui.scheduler`) and a
*deliver* function, run later in the script thread to store the result in session state. Every
run of the app calls :func:`collect`, which delivers a finished job's result in the session that
owns it, and :func:`panel` shows the job on every page, polling with ``st.fragment(run_every=...)``.

One job per browser session at a time (kept in that session's state, so no session sees
another's). Starting a job with the inputs of the session's running job reuses it; inputs whose
result is in the scheduler's result cache (as ``st.cache_data`` did) deliver at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

import streamlit as st

from dsmooth_lab_ui import threads
from dsmooth_lab_ui.scheduler import (
    CANCELLED,
    DONE,
    FAILED,
    MANAGER,
    METHODS_KEPT,
    NOTHING_KEPT,
    QUEUED,
    RUNNING,
    Job,
    Progress,
    changed_within,
)

# the names pages use beside start(): jobs.METHODS_KEPT, jobs.MANAGER (app.py warms its workers)
__all__ = ["MANAGER", "METHODS_KEPT", "NOTHING_KEPT", "Progress", "collect", "panel", "start"]

SESSION_JOB = "dsl_job"  # the session's current or last Job
_FULL_RUN = threading.local()  # .drawing: the panel's fragment is being called inside a full run
POLL_SECONDS = 1.0  # progress redraws; a finished job reruns the page at once (scheduler.changed_within)
# The fragment's timer. Each of its runs waits up to POLL_SECONDS for the job to change; a tick that falls
# due during a run starts the next run as soon as it ends (3-15 ms later in Chromium), so some run is
# always waiting on the job, the first from this soon after the panel is drawn. With the timer at
# POLL_SECONDS, a 0.7 s attack was shown about 1 s after the panel appeared, 0.3 s after it ended:
# nothing waited on the job until the first tick (Chromium).
TICK_SECONDS = 0.2
# Cancel waits this long for the outcome; a batch of the bundled model on one CPU thread takes about 0.2 s,
# and work that does not answer is ended after the watchdog's grace (3 s)
CANCEL_WAIT_SECONDS = 3.5
QUEUED_POLL_SECONDS = 3.0  # a queued job changes rarely; polling less leaves the cores to the running one


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
        place = queued_line(MANAGER.place_in_line(job))
        return f"{place}. {job.title} starts when a slot frees (sessions share the cores)."
    if state == RUNNING:
        count = f"{done:,} / {total:,}" if total else "starting"
        return f"{job.title} ({where}{count}, {seconds:.0f} s, {job.threads} thread(s))"
    if state == DONE:
        return f"{job.title}: done in {seconds:.1f} s"
    if state == CANCELLED:
        after = f" after {done:,} of {total:,} steps ({step})" if total else ""
        forced = f" {job.error}" if job.error else ""
        return f"Cancelled: {job.title} stopped{after}.{forced} {job.kept}"
    return f"{job.title} failed: {job.error}. {job.kept}"


def queued_line(place: int | None) -> str:
    """The waiting session's place, e.g. "Queued: 3rd in line (2 jobs ahead of yours)"."""
    if place is None:  # it left the queue between the state read and this call
        return "Queued: starting"
    ahead = place - 1
    jobs_ahead = "1 job" if ahead == 1 else f"{ahead} jobs"
    return f"Queued: {ordinal(place)} in line ({jobs_ahead} ahead of yours)"


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, ..., 21st."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def panel() -> None:
    """Show the session's job on every page: live progress and Cancel while it runs, then its outcome.

    Cancel sits outside the progress fragment: a click on it is a full rerun, which Streamlit starts
    at once even while the fragment waits (see :func:`scheduler.changed_within`); a click inside the
    fragment would queue behind that wait.
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
                    st.fragment(run_every=TICK_SECONDS if job.state == RUNNING else every)(_live)(job.state, every)
                finally:
                    _FULL_RUN.drawing = False
            right.button("Cancel", key="dsl_job_cancel", icon=":material/stop_circle:", on_click=request_cancel)
    elif job.state == CANCELLED:
        st.warning(describe(job), icon=":material/cancel:")
    elif job.state == FAILED:
        st.error(describe(job), icon=":material/error:")
    else:
        st.caption(describe(job))


def _live(drawn_state: str, every: float) -> None:
    job = current()
    if job is None or job.state != drawn_state:
        st.rerun()  # started or finished: a full run polls at the new rate, or delivers the result
        return
    with job.lock:
        fraction = job.done / job.total if job.total else 0.0
    place = MANAGER.place_in_line(job) if drawn_state == QUEUED else None
    st.progress(min(max(fraction, 0.0), 1.0), text=describe(job))
    if getattr(_FULL_RUN, "drawing", False):
        return
    if drawn_state == QUEUED:
        if MANAGER.queue_moved(job, place, every):  # a job ahead ended (a new place) or this one started
            st.rerun()
    elif changed_within(job, drawn_state, every):
        st.rerun()
