"""Long runs: a progress bar, a Cancel button, and a clear note when a run was stopped.

How cancelling works. A job runs in the script thread and reports ``(done, total)`` through a
:class:`JobProgress` callback, which updates an ``st.progress`` bar. Every bar update is a point at
which Streamlit checks for a pending rerun. Pressing **Cancel** (a button shown while the job runs)
asks for a rerun, so at the next progress report Streamlit stops the run: the job unwinds before
finishing and nothing is cached or stored. In the rerun the button's ``on_click`` has marked the job
as cancelled, and the page shows what was stopped and how far it got (``JOB_RUNNING`` was left
behind by the interrupted run). The callback also returns ``True`` when the cancel flag is already
set when it is called, so the library raises :class:`dsmooth_core.Cancelled` (the path the unit
tests drive, and the one a job sees if the flag is set from the same run).

Changing any other control while a job runs stops it the same way (Streamlit reruns on every
interaction); the note then says the run was interrupted rather than cancelled.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any

import streamlit as st

from dsmooth_core import Cancelled
from dsmooth_lab_ui import state

_MIN_STEP = 0.02  # fraction of the job between two bar updates
_MIN_SECONDS = 0.3  # ... or this much time


class JobProgress:
    """A ``(done, total) -> stop?`` callback drawing an ``st.progress`` bar.

    Create it where the bar should appear. Inside an ``st.cache_data`` function, create it inside
    the function, so a cache hit replays a bar it knows about.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar = st.progress(0.0, text=f"{label}: starting")
        self._last_fraction = -1.0
        self._last_time = 0.0

    def __call__(self, done: int, total: int) -> bool:
        fraction = min(max(done / max(total, 1), 0.0), 1.0)
        now = time.monotonic()
        running = st.session_state.get(state.JOB_RUNNING)
        if isinstance(running, dict):
            running.update(done=done, total=total, step=self.label)
        if done >= total or fraction - self._last_fraction >= _MIN_STEP or now - self._last_time >= _MIN_SECONDS:
            self.bar.progress(fraction, text=f"{self.label}: {done:,} / {total:,}")
            self._last_fraction = fraction
            self._last_time = now
        return bool(st.session_state.get(state.JOB_CANCEL))

    def finish(self) -> None:
        self.bar.empty()


def request_cancel(job: str) -> None:
    """``on_click`` of the Cancel button: mark the job in progress as cancelled."""
    st.session_state[state.JOB_CANCEL] = True
    running = st.session_state.get(state.JOB_RUNNING)
    if isinstance(running, dict) and running.get("job") == job:
        running["cancelled"] = True


def _describe_stop(running: dict[str, Any], cancelled: bool) -> str:
    done, total = running.get("done"), running.get("total")
    where = f" after {done:,} of {total:,} steps" if done is not None and total else ""
    step = running.get("step")
    what = f"{running.get('title', running['job'])}" + (f" ({step})" if step else "")
    if cancelled:
        return f"Cancelled: {what} stopped{where}. Nothing from the unfinished part was kept."
    return (
        f"{what} was interrupted{where}, because a control changed or the page was left while it ran. "
        "Nothing from the unfinished part was kept; run it again."
    )


def show_interrupted(job: str) -> Any:
    """At the top of a job's page: say so if the last run of ``job`` was cancelled or interrupted.

    Returns the placeholder of the note; give it to :func:`running_job` so a new run clears it.
    """
    running = st.session_state.get(state.JOB_RUNNING)
    notes: dict[str, str] = st.session_state.setdefault(state.JOB_NOTE, {})
    if isinstance(running, dict) and running.get("job") == job:
        cancelled = bool(running.get("cancelled") or st.session_state.get(state.JOB_CANCEL))
        notes[job] = _describe_stop(running, cancelled)
        st.session_state[state.JOB_RUNNING] = None
        st.session_state[state.JOB_CANCEL] = False
    slot = st.empty()
    if job in notes:
        slot.warning(notes[job], icon=":material/cancel:")
    return slot


@contextmanager
def running_job(job: str, title: str, note: Any = None):
    """Run ``job`` inside an ``st.status`` box with a Cancel button; yields the status box.

    The box ends "complete" (collapsed) when the block finishes, "error" when it raises (Cancelled
    included). A Streamlit rerun interrupting the job skips the clean-up on purpose: ``JOB_RUNNING``
    then stays behind and :func:`show_interrupted` reports the stop on the next run. ``note`` is the
    placeholder :func:`show_interrupted` returned in this run: the old note is cleared.
    """
    st.session_state.setdefault(state.JOB_NOTE, {}).pop(job, None)
    if note is not None:
        note.empty()
    st.session_state[state.JOB_CANCEL] = False
    st.session_state[state.JOB_RUNNING] = {"job": job, "title": title, "done": 0, "total": None}
    started = time.monotonic()
    status = st.status(f"{title} ...", expanded=True, state="running")
    with status:
        slot = st.empty()
        slot.button(
            "Cancel",
            key=f"cancel_{job}",
            icon=":material/stop_circle:",
            on_click=request_cancel,
            args=(job,),
            help="Stop this run; finished parts (e.g. methods already certified) are kept.",
        )
        try:
            yield status
        except Exception as exc:
            _finish(slot)
            what = "cancelled" if isinstance(exc, Cancelled) else "failed"
            status.update(label=f"{title}: {what}", state="error", expanded=False)
            raise
        _finish(slot)
    status.update(label=f"{title}: done in {time.monotonic() - started:.1f} s", state="complete", expanded=False)


def _finish(slot: Any) -> None:
    st.session_state[state.JOB_RUNNING] = None
    st.session_state[state.JOB_CANCEL] = False
    slot.empty()


def cancelled_message(job: str, title: str, exc: BaseException) -> None:
    """Record and show that ``job`` stopped with :class:`dsmooth_core.Cancelled`."""
    message = f"Cancelled: {title} stopped ({exc}). Nothing from the unfinished part was kept."
    st.session_state.setdefault(state.JOB_NOTE, {})[job] = message
    st.warning(message, icon=":material/cancel:")
