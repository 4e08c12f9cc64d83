"""Waiting for the app's background job in AppTest, as a live browser's polling would."""

from __future__ import annotations

import time

from streamlit.testing.v1 import AppTest

from dsmooth_lab_ui import jobs, scheduler


def wait_for_job(at: AppTest, timeout: float = 240) -> scheduler.Job | None:
    """Wait for the session's background job to end, then run again (which delivers its result).

    Returns the job (``None`` when there was none, e.g. the result came from the cache).
    """
    job = at.session_state.get(jobs.SESSION_JOB)
    deadline = time.monotonic() + timeout
    while job is not None and job.active:
        assert time.monotonic() < deadline, f"{job.title} still {job.state} after {timeout} s"
        time.sleep(0.05)
    at.run()
    return job


def finish_job(at: AppTest, timeout: float = 240) -> scheduler.Job | None:
    """Run after a click (which starts the job), then wait for it as :func:`wait_for_job` does."""
    at.run()
    return wait_for_job(at, timeout)


def click_and_finish(at: AppTest, button_key: str, timeout: float = 240) -> scheduler.Job:
    """Press the button that starts a job, wait for the job to end, and run again (delivers or reports it)."""
    at.button(key=button_key).click()
    job = finish_job(at, timeout)
    assert job is not None, f"pressing {button_key!r} started no job"
    return job


def run_experiment(at: AppTest) -> scheduler.Job:
    """Press the Experiments page's Run and wait for its job (as :func:`click_and_finish`)."""
    return click_and_finish(at, "exp_run", timeout=120)
