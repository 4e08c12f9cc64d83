"""Jobs whose work can be pickled run in a worker process: results, progress, Cancel, failures, crashes,
user programs, and the watchdog that ends a job which never reports again."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time

import pytest
import torch

from dsmooth_core import certify
from dsmooth_core.models import DEFAULT_MODEL, ModelInfo, load_model, wrap
from dsmooth_core.models.user import load_user_model
from dsmooth_core.noise import make_noise
from dsmooth_lab_ui import pool, programs, scheduler, tasks, watchdog
from tests import user_models, worker_work


@pytest.fixture(scope="module")
def manager():
    manager = scheduler.JobManager(slots=1)
    yield manager
    manager.workers.close()


def _job(work, key: str) -> scheduler.Job:
    return scheduler.Job(kind="test", title=f"job {key}", key=key, work=work, deliver=lambda _: None, threads=1)


def _wait(job: scheduler.Job, timeout: float = 120) -> scheduler.Job:
    deadline = time.monotonic() + timeout
    while job.active:
        assert time.monotonic() < deadline, f"{job.title} still {job.state}"
        time.sleep(0.01)
    return job


def _run(manager: scheduler.JobManager, work, key: str = "k", timeout: float = 120) -> scheduler.Job:
    job = _job(work, key)
    manager.submit(job)
    return _wait(job, timeout)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_picklable_work_runs_in_another_process_and_reports_progress(manager: scheduler.JobManager) -> None:
    job = _run(manager, functools.partial(worker_work.report_and_return_pid), "pid")
    assert job.state == scheduler.DONE and job.result != os.getpid()
    assert (job.step, job.done, job.total) == ("reporting", 3, 3)
    again = _run(manager, functools.partial(worker_work.report_and_return_pid), "pid again")
    assert again.result == job.result  # the worker is kept between jobs


def test_a_worker_freezes_the_objects_its_imports_left(manager: scheduler.JobManager) -> None:
    """Else the first full collection in a job walks them all (0.2 s of the first attack, measured)."""
    job = _run(manager, functools.partial(worker_work.frozen_objects), "frozen")
    assert job.state == scheduler.DONE and job.result > 100_000


def test_work_that_cannot_be_pickled_runs_in_a_thread_of_the_server(manager: scheduler.JobManager) -> None:
    assert pool.payload(lambda progress: 1) is None
    job = _run(manager, lambda progress: os.getpid(), "closure")
    assert job.state == scheduler.DONE and job.result == os.getpid() and job.worker_pid is None


def test_processes_can_be_switched_off(monkeypatch: pytest.MonkeyPatch, manager: scheduler.JobManager) -> None:
    monkeypatch.setenv(pool.ENV, "0")
    job = _run(manager, functools.partial(worker_work.report_and_return_pid), "off")
    assert job.result == os.getpid()


def test_certificate_from_a_worker_equals_the_library_call(manager: scheduler.JobManager) -> None:
    model = load_model(DEFAULT_MODEL)
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = make_noise("randsmooth", 0.25)
    work = functools.partial(tasks.certificates, model, x, [(noise, ("worker test", 1))], 20, 300, 0.001, 100, 5)
    job = _run(manager, work, "certify")
    assert job.state == scheduler.DONE
    [(returned_noise, cert)] = job.result
    direct = certify(model, x, noise, 20, 300, 0.001, 100, torch.Generator().manual_seed(5))
    assert returned_noise.identity() == noise.identity()
    assert (cert.prediction, cert.counts_estimation, cert.radius) == (
        direct.prediction,
        direct.counts_estimation,
        direct.radius,
    )


def test_cancel_stops_the_work_at_its_next_report_and_keeps_the_worker(manager: scheduler.JobManager) -> None:
    pid = _run(manager, functools.partial(worker_work.report_and_return_pid), "before").result
    job = _job(functools.partial(worker_work.count_until_cancelled, 3000), "long")
    manager.submit(job)
    while job.done < 20:
        time.sleep(0.01)
    job.cancel.set()
    deadline = time.monotonic() + 30
    while job.active:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert job.state == scheduler.CANCELLED and job.result is None and job.done < 3000
    assert manager.cached("long") == (False, None)
    assert _run(manager, functools.partial(worker_work.report_and_return_pid), "after").result == pid


def test_a_failure_in_the_worker_keeps_its_message(manager: scheduler.JobManager) -> None:
    job = _run(manager, functools.partial(worker_work.fail, "too few perturbations"), "fails")
    assert job.state == scheduler.FAILED and job.error == "too few perturbations"
    assert manager.cached("fails") == (False, None)


def test_a_worker_that_dies_fails_its_job_and_the_next_job_gets_a_new_one(manager: scheduler.JobManager) -> None:
    pid = _run(manager, functools.partial(worker_work.report_and_return_pid), "first").result
    job = _run(manager, functools.partial(worker_work.die, 3), "dies")
    assert job.state == scheduler.FAILED and "stopped unexpectedly (exit code 3)" in job.error
    after = _run(manager, functools.partial(worker_work.report_and_return_pid), "next")
    assert after.state == scheduler.DONE and after.result not in (pid, os.getpid())


def test_closing_the_pool_ends_its_idle_workers() -> None:
    workers = pool.WorkerPool()
    workers.warm()
    [started] = workers._idle
    workers.close()
    assert started.process.poll() is not None and not workers._idle


# ---------------------------------------------------------------- what a worker imports
def test_a_worker_imports_neither_streamlit_nor_the_scheduler() -> None:
    manager = scheduler.JobManager(slots=1)  # a fresh worker: nothing another test ran has been imported
    try:
        model = load_model(DEFAULT_MODEL)
        x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2))
        noise = make_noise("randsmooth", 0.25)
        work = functools.partial(tasks.certificates, model, x, [(noise, ("imports", 1))], 10, 100, 0.001, 100, 0)
        assert _run(manager, work, "certify").state == scheduler.DONE
        job = _run(manager, functools.partial(worker_work.loaded_modules), "modules")
    finally:
        manager.workers.close()
    assert job.worker_pid not in (None, os.getpid())
    loaded = set(job.result)
    assert "dsmooth_lab_ui.tasks" in loaded and "dsmooth_core" in loaded  # the list is the worker's
    assert not {m for m in loaded if m == "streamlit" or m.startswith("streamlit.")}
    assert not loaded & {"dsmooth_lab_ui.scheduler", "dsmooth_lab_ui.jobs", "dsmooth_lab_ui.pool"}


# ---------------------------------------------------------------- user programs go as their bytes
def _scripted(limit: int = 10_000) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.jit.script(worker_work.HangsOnLargeBatches(limit))
    return wrap(net, ModelInfo("hangs.pt", "custom", (3, 32, 32), tuple(f"c{i}" for i in range(10)), "upload"))


def _certify_work(model: torch.nn.Module, n: int, batch: int, key: str):
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    noise = make_noise("randsmooth", 0.25)
    return functools.partial(tasks.certificates, model, x, [(noise, (key, 1))], 10, n, 0.001, batch, 4)


def _direct(model: torch.nn.Module, n: int, batch: int):
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    return certify(model, x, make_noise("randsmooth", 0.25), 10, n, 0.001, batch, torch.Generator().manual_seed(4))


def test_a_torchscript_model_runs_in_the_worker_and_gives_the_librarys_certificate(manager) -> None:
    model = _scripted()
    job = _run(manager, _certify_work(model, 200, 50, "script"), "script")
    assert job.state == scheduler.DONE and job.worker_pid not in (None, os.getpid()), job.error
    [(_, cert)] = job.result
    direct = _direct(model, 200, 50)
    assert (cert.prediction, cert.counts_estimation, cert.radius) == (
        direct.prediction,
        direct.counts_estimation,
        direct.radius,
    )


@pytest.mark.slow  # a fresh worker process: its imports take most of the 8-10 s
def test_a_torch_export_model_runs_in_the_worker_from_its_file() -> None:
    data = user_models.export_bytes()
    model = load_user_model(data, trust_code=True)
    with pytest.raises(Exception, match="program file was not remembered"):
        programs.reduce(model.net)
    programs.remember(model, data)
    manager = scheduler.JobManager(slots=1)
    try:
        job = _run(manager, _certify_work(model, 100, 50, "export"), "export")
    finally:
        manager.workers.close()
    assert job.state == scheduler.DONE and job.worker_pid not in (None, os.getpid()), job.error
    [(_, cert)] = job.result
    direct = _direct(model, 100, 50)
    assert (cert.prediction, cert.counts_estimation) == (direct.prediction, direct.counts_estimation)


# ---------------------------------------------------------------- the watchdog
@pytest.mark.slow  # a fresh worker process: its imports take most of the 8-10 s
def test_a_never_returning_model_is_cancelled_within_seconds_and_the_next_job_runs() -> None:
    """A trusted TorchScript model spins for good on batches over 50: Cancel ends its worker, the queue moves on."""
    manager = scheduler.JobManager(slots=1)
    try:
        hung = _job(_certify_work(_scripted(limit=50), 1000, 100, "hangs"), "hangs")
        manager.submit(hung)
        while hung.step != "RandSmooth: noise draws" or hung.done < 10:  # selection (batch 10) done: now it hangs
            assert hung.active, hung.error
            time.sleep(0.01)
        after = _job(_certify_work(_scripted(limit=50), 100, 50, "after"), "after")  # another session's job
        manager.submit(after)
        time.sleep(0.5)
        assert hung.state == scheduler.RUNNING and after.state == scheduler.QUEUED
        asked = time.monotonic()
        hung.cancel.set()  # what the panel's Cancel button does
        _wait(hung, timeout=30)
        took = time.monotonic() - asked
        assert hung.state == scheduler.CANCELLED and took < watchdog.CANCEL_GRACE_SECONDS + 2, took
        assert "did not stop within 3 s of Cancel" in hung.error and "was ended" in hung.error
        assert _gone(hung.worker_pid)
        _wait(after)
        assert after.state == scheduler.DONE, after.error
        assert after.worker_pid not in (None, hung.worker_pid)
        assert manager.cached(hung.key) == (False, None)
    finally:
        manager.workers.close()


@pytest.mark.slow  # a fresh worker process: its imports take most of the 8-10 s
def test_a_stopped_worker_is_ended_by_the_no_progress_limit_and_the_next_job_runs() -> None:
    manager = scheduler.JobManager(slots=1, limits=watchdog.Limits(stall_seconds=1.5))
    try:
        # a started worker first: its imports take seconds on a busy machine, longer than this short limit
        assert _run(manager, functools.partial(worker_work.report_and_return_pid), "warm").state == scheduler.DONE
        stopped = _job(functools.partial(worker_work.count_until_cancelled, 100_000), "stopped")
        manager.submit(stopped)
        while stopped.done < 20:
            assert stopped.active, stopped.error
            time.sleep(0.01)
        os.kill(stopped.worker_pid, signal.SIGSTOP)
        paused = time.monotonic()
        _wait(stopped, timeout=30)
        took = time.monotonic() - paused
        assert stopped.state == scheduler.FAILED and 1.5 <= took < 5, took
        assert f"no progress report for 1.5 s (the limit {watchdog.STALL_ENV} sets)" in stopped.error
        assert _gone(stopped.worker_pid)
        after = _run(manager, functools.partial(worker_work.report_and_return_pid), "after stop")
        assert after.state == scheduler.DONE and after.result not in (stopped.worker_pid, os.getpid())
    finally:
        manager.workers.close()


def test_a_worker_stopped_while_idle_fails_the_next_job_by_the_limit_and_the_one_after_runs() -> None:
    """Its work is larger than the socket holds, so even sending it waits for a worker that never reads."""
    manager = scheduler.JobManager(slots=1, limits=watchdog.Limits(stall_seconds=1.5))
    try:
        idle = _run(manager, functools.partial(worker_work.report_and_return_pid), "warm").result
        os.kill(idle, signal.SIGSTOP)
        large = bytes(8_000_000)
        job = _run(manager, functools.partial(worker_work.return_length, large), "large", timeout=30)
        assert job.state == scheduler.FAILED and "no progress report for 1.5 s" in job.error
        assert job.worker_pid == idle and _gone(idle)
        after = _run(manager, functools.partial(worker_work.return_length, large), "after")
        assert after.state == scheduler.DONE and after.result == len(large), after.error
    finally:
        manager.workers.close()


def test_work_in_a_thread_that_never_reports_is_closed_and_the_queue_moves_on() -> None:
    """Where no process is possible (work that does not pickle) the job is closed; its thread is left to end."""
    manager = scheduler.JobManager(slots=1, limits=watchdog.Limits(stall_seconds=1.0, cancel_grace_seconds=0.5))
    release = threading.Event()
    silent = _job(lambda progress: release.wait(60), "silent")
    manager.submit(silent)
    _wait(silent, timeout=30)
    assert silent.state == scheduler.FAILED and "no progress report for 1 s" in silent.error
    assert "cannot be ended" in silent.error
    ignores_cancel = _job(lambda progress: release.wait(60), "ignores cancel")
    manager.submit(ignores_cancel)
    while ignores_cancel.state != scheduler.RUNNING:
        time.sleep(0.01)
    ignores_cancel.cancel.set()
    _wait(ignores_cancel, timeout=30)
    assert ignores_cancel.state == scheduler.CANCELLED and "did not stop within 0.5 s" in ignores_cancel.error
    assert _run(manager, lambda progress: "next", "next").result == "next"
    release.set()


def test_the_stall_limit_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(watchdog.STALL_ENV, raising=False)
    assert watchdog.from_environment().stall_seconds == watchdog.STALL_SECONDS == 60
    monkeypatch.setenv(watchdog.STALL_ENV, "2.5")
    assert watchdog.from_environment().stall_seconds == 2.5
    monkeypatch.setenv(watchdog.STALL_ENV, "0")
    with pytest.raises(ValueError, match=watchdog.STALL_ENV):
        watchdog.from_environment()
    manager = scheduler.JobManager(slots=1)
    job = _run(manager, lambda progress: "never run", "bad setting")  # the job says why, the server goes on
    assert job.state == scheduler.FAILED and watchdog.STALL_ENV in job.error
