"""Jobs whose work can be pickled run in a worker process: results, progress, Cancel, failures, crashes."""

from __future__ import annotations

import functools
import os
import time

import pytest
import torch

from dsmooth_core import certify
from dsmooth_core.models import DEFAULT_MODEL, load_model
from dsmooth_core.noise import make_noise
from dsmooth_lab_ui import jobs, tasks, worker
from tests import worker_work


@pytest.fixture(scope="module")
def manager():
    manager = jobs.JobManager(slots=1)
    yield manager
    manager.workers.close()


def _run(manager: jobs.JobManager, work, key: str = "k", timeout: float = 120) -> jobs.Job:
    job = jobs.Job(kind="test", title=f"job {key}", key=key, work=work, deliver=lambda _: None, threads=1)
    manager.submit(job)
    deadline = time.monotonic() + timeout
    while job.active:
        assert time.monotonic() < deadline, f"{job.title} still {job.state}"
        time.sleep(0.01)
    return job


def test_picklable_work_runs_in_another_process_and_reports_progress(manager: jobs.JobManager) -> None:
    job = _run(manager, functools.partial(worker_work.report_and_return_pid), "pid")
    assert job.state == jobs.DONE and job.result != os.getpid()
    assert (job.step, job.done, job.total) == ("reporting", 3, 3)
    again = _run(manager, functools.partial(worker_work.report_and_return_pid), "pid again")
    assert again.result == job.result  # the worker is kept between jobs


def test_a_worker_freezes_the_objects_its_imports_left(manager: jobs.JobManager) -> None:
    """Else the first full collection in a job walks them all (0.2 s of the first attack, measured)."""
    job = _run(manager, functools.partial(worker_work.frozen_objects), "frozen")
    assert job.state == jobs.DONE and job.result > 100_000


def test_work_that_cannot_be_pickled_runs_in_the_jobs_thread(manager: jobs.JobManager) -> None:
    assert worker.payload(lambda progress: 1) is None
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)))
    assert worker.payload(functools.partial(tasks.attack, scripted)) is None  # an uploaded program
    job = _run(manager, lambda progress: os.getpid(), "closure")
    assert job.state == jobs.DONE and job.result == os.getpid()


def test_processes_can_be_switched_off(monkeypatch: pytest.MonkeyPatch, manager: jobs.JobManager) -> None:
    monkeypatch.setenv(worker.ENV, "0")
    job = _run(manager, functools.partial(worker_work.report_and_return_pid), "off")
    assert job.result == os.getpid()


def test_certificate_from_a_worker_equals_the_library_call(manager: jobs.JobManager) -> None:
    model = load_model(DEFAULT_MODEL)
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = make_noise("randsmooth", 0.25)
    work = functools.partial(tasks.certificates, model, x, [(noise, ("worker test", 1))], 20, 300, 0.001, 100, 5)
    job = _run(manager, work, "certify")
    assert job.state == jobs.DONE
    [(returned_noise, cert)] = job.result
    direct = certify(model, x, noise, 20, 300, 0.001, 100, torch.Generator().manual_seed(5))
    assert returned_noise.identity() == noise.identity()
    assert (cert.prediction, cert.counts_estimation, cert.radius) == (
        direct.prediction,
        direct.counts_estimation,
        direct.radius,
    )


def test_cancel_stops_the_work_at_its_next_report_and_keeps_the_worker(manager: jobs.JobManager) -> None:
    pid = _run(manager, functools.partial(worker_work.report_and_return_pid), "before").result
    job = jobs.Job(
        kind="test",
        title="long",
        key="long",
        work=functools.partial(worker_work.count_until_cancelled, 3000),
        deliver=lambda _: None,
        threads=1,
    )
    manager.submit(job)
    while job.done < 20:
        time.sleep(0.01)
    job.cancel.set()
    deadline = time.monotonic() + 30
    while job.active:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert job.state == jobs.CANCELLED and job.result is None and job.done < 3000
    assert manager.cached("long") == (False, None)
    assert _run(manager, functools.partial(worker_work.report_and_return_pid), "after").result == pid


def test_a_failure_in_the_worker_keeps_its_message(manager: jobs.JobManager) -> None:
    job = _run(manager, functools.partial(worker_work.fail, "too few perturbations"), "fails")
    assert job.state == jobs.FAILED and job.error == "too few perturbations"
    assert manager.cached("fails") == (False, None)


def test_a_worker_that_dies_fails_its_job_and_the_next_job_gets_a_new_one(manager: jobs.JobManager) -> None:
    pid = _run(manager, functools.partial(worker_work.report_and_return_pid), "first").result
    job = _run(manager, functools.partial(worker_work.die, 3), "dies")
    assert job.state == jobs.FAILED and "stopped unexpectedly (exit code 3)" in job.error
    after = _run(manager, functools.partial(worker_work.report_and_return_pid), "next")
    assert after.state == jobs.DONE and after.result not in (pid, os.getpid())


def test_closing_the_pool_ends_its_idle_workers() -> None:
    pool = worker.WorkerPool()
    pool.warm()
    [started] = pool._idle
    pool.close()
    assert started.process.poll() is not None and not pool._idle
