"""A class on one server: each waiting session sees its place in line, equal jobs are computed once,
and the classroom benchmark's figures (its quick mode runs in Chromium, marked ``browser``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest
from streamlit.testing.v1 import AppTest

from dsmooth_lab_ui import jobs, scheduler

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "bench_classroom.py"


def _bench() -> ModuleType:
    """The benchmark script (benchmarks/ is a plain folder; it imports its neighbours by name)."""
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_classroom", BENCH)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclass looks its module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    return module


def _job(work, key: str) -> scheduler.Job:
    return scheduler.Job(kind="test", title=f"job {key}", key=key, work=work, deliver=lambda _: None, threads=1)


def _wait(job: scheduler.Job, timeout: float = 30) -> None:
    assert job.ended.wait(timeout), f"{job.title} still {job.state}"


def _blocked(manager: scheduler.JobManager) -> tuple[threading.Event, list[scheduler.Job]]:
    """Fill every slot of ``manager`` with a job that runs until the returned event is set."""
    release = threading.Event()
    blockers = [_job(lambda progress: release.wait(30), f"blocker {i}") for i in range(manager.slots)]
    for blocker in blockers:
        manager.submit(blocker)
        assert blocker.began.wait(10)
    return release, blockers


# ---------------------------------------------------------------- the place in line
def test_each_queued_job_knows_its_place_and_it_moves_with_the_queue() -> None:
    manager = scheduler.JobManager(slots=1)
    gates = [threading.Event() for _ in range(3)]
    first, second, third = (_job(lambda progress, g=g: g.wait(30), key) for g, key in zip(gates, "abc", strict=True))
    for job in (first, second, third):
        manager.submit(job)
    assert first.began.wait(10)
    time.sleep(0.3)  # the others are waiting for the slot
    assert manager.place_in_line(first) is None  # it runs: no longer in line
    assert (manager.place_in_line(second), manager.place_in_line(third)) == (2, 3)
    assert not manager.queue_moved(third, 3, 0.05)  # nothing ended: the wait runs out
    gates[0].set()
    started = time.monotonic()
    assert manager.queue_moved(third, 3, 10)
    assert time.monotonic() - started < 2  # woken by the slot freeing, not by a poll
    assert second.began.wait(10)
    assert manager.place_in_line(third) == 2
    gates[1].set()
    gates[2].set()
    _wait(third)
    assert manager.place_in_line(third) is None


def test_a_cancelled_job_ahead_moves_the_ones_behind_it() -> None:
    manager = scheduler.JobManager(slots=1)
    release, _ = _blocked(manager)
    ahead, behind = _job(lambda progress: "a", "ahead"), _job(lambda progress: "b", "behind")
    manager.submit(ahead)
    manager.submit(behind)
    time.sleep(0.3)
    assert manager.place_in_line(behind) == 3
    ahead.cancel.set()
    assert manager.queue_moved(behind, 3, 10) and manager.place_in_line(behind) == 2
    release.set()
    _wait(behind)
    assert (ahead.state, behind.state) == (scheduler.CANCELLED, scheduler.DONE)


@pytest.mark.parametrize(
    ("place", "line"),
    [
        (1, "Queued: 1st in line (0 jobs ahead of yours)"),
        (2, "Queued: 2nd in line (1 job ahead of yours)"),
        (3, "Queued: 3rd in line (2 jobs ahead of yours)"),
        (4, "Queued: 4th in line (3 jobs ahead of yours)"),
        (11, "Queued: 11th in line (10 jobs ahead of yours)"),
        (12, "Queued: 12th in line (11 jobs ahead of yours)"),
        (13, "Queued: 13th in line (12 jobs ahead of yours)"),
        (21, "Queued: 21st in line (20 jobs ahead of yours)"),
        (22, "Queued: 22nd in line (21 jobs ahead of yours)"),
        (111, "Queued: 111th in line (110 jobs ahead of yours)"),
        (None, "Queued: starting"),
    ],
)
def test_the_queued_line_says_the_place_in_words(place: int | None, line: str) -> None:
    assert jobs.queued_line(place) == line


def _panel_script() -> None:
    import streamlit as st

    from dsmooth_lab_ui import jobs

    st.session_state[jobs.SESSION_JOB] = st.session_state["queued job"]
    jobs.panel()


def test_the_panel_of_a_queued_job_shows_its_place() -> None:
    """The app's panel, in a session whose job waits behind the process-wide manager's busy slots."""
    manager = jobs.MANAGER
    release, blockers = _blocked(manager)
    waiting = [_job(lambda progress, i=i: i, f"classroom {i}") for i in range(2)]
    try:
        for job in waiting:
            manager.submit(job)
        time.sleep(0.3)
        at = AppTest.from_function(_panel_script, default_timeout=30)
        at.session_state["queued job"] = waiting[1]
        at.run()
        assert not at.exception
        texts = [str(getattr(element, "proto", element)) for element in at.get("progress")]
        place = manager.slots + 2  # behind the blockers and the other waiting job
        expected = f"Queued: {jobs.ordinal(place)} in line ({place - 1} jobs ahead of yours)"
        assert any(expected in text for text in texts), texts
    finally:
        release.set()
        for job in [*blockers, *waiting]:
            _wait(job)


# ---------------------------------------------------------------- equal jobs computed once
def test_an_equal_job_behind_in_the_queue_takes_the_first_ones_result() -> None:
    manager = scheduler.JobManager(slots=1)
    release, _ = _blocked(manager)
    calls: list[int] = []

    def work(progress) -> int:
        calls.append(1)
        return 42

    first, equal, uncached = _job(work, "same"), _job(work, "same"), _job(work, "same")
    uncached.cache = False  # its result depends on more than its key: always computed
    for job in (first, equal, uncached):
        manager.submit(job)
    release.set()
    for job in (first, equal, uncached):
        _wait(job)
    assert [job.result for job in (first, equal, uncached)] == [42, 42, 42]
    assert all(job.state == scheduler.DONE for job in (first, equal, uncached))
    assert len(calls) == 2  # the first and the uncached one; the equal one took the first's result
    assert equal.seconds() == 0.0


# ---------------------------------------------------------------- the benchmark's figures
def test_percentiles_are_nearest_rank() -> None:
    bench = _bench()
    values = [float(v) for v in range(1, 21)]  # 1..20
    assert bench.percentile(values, 95) == 19.0
    assert bench.percentile(values, 50) == 10.0
    assert bench.percentile([7.0], 95) == 7.0
    assert bench.summary(values) == {"median": 10.5, "p95": 19.0, "max": 20.0}


def test_job_rows_count_how_each_job_was_served() -> None:
    """Waits are over the jobs that queued; a result cached at the click is timed apart."""
    bench = _bench()

    def session(number: int, attack: tuple, certify: tuple) -> dict:
        raw = {"session": number, "opened at s": 0.0, "ended at s": 1.0}
        for job, (how, wait, run, places) in (("attack", attack), ("certify", certify)):
            raw[job] = {"how": how, "wait s": wait, "run s": run, "places": places, "correct": True}
        return bench.flat(raw)

    sessions = [
        session(0, ("computed", 1.0, 9.0, []), ("computed", 2.0, 8.0, [2])),
        session(1, ("equal job's result", 5.0, 0.0, [3, 2]), ("cached", 30.0, 0.0, [])),
        bench.flat({"session": 2, "opened at s": 0.0, "ended at s": 1.0, "error": "TimeoutError: no answer"}),
    ]
    attack, certify = bench.job_rows(sessions)
    served = ("finished", "correct", "computed", "equal job's result", "cached at the click")
    assert [attack[key] for key in served] == [2, 2, 1, 1, 0]
    assert (attack["wait median s"], attack["wait max s"], attack["run median s"]) == (3.0, 5.0, 9.0)
    assert attack["most jobs ahead shown"] == 2
    assert [certify[key] for key in served] == [2, 2, 1, 0, 1]
    assert (certify["wait max s"], certify["cached: drawn after, max s"]) == (2.0, 30.0)  # not a queue wait
    assert certify["most jobs ahead shown"] == 1


def test_older_rows_are_read_by_their_run_times() -> None:
    """A job whose running frame was missed ran (its run time is not 0); a certify showing the attack's
    caption was cached at the click."""
    bench = _bench()
    row = {
        "session": 0,
        "attack how": "equal job's result",
        "attack wait s": 12.0,
        "attack run s": 4.0,
        "attack places": [2],
        "attack correct": True,
        "certify how": "equal job's result",
        "certify wait s": 9.0,
        "certify run s": 4.0,
        "certify places": [],
        "certify correct": True,
    }
    attack, certify = bench.job_rows([row])
    assert (attack["computed"], attack["wait max s"], attack["run max s"]) == (1, 8.0, 4.0)
    assert (certify["cached at the click"], certify["computed"], certify["cached: drawn after, max s"]) == (1, 0, 9.0)


def test_the_certify_line_is_parsed_as_the_page_prints_it() -> None:
    bench = _bench()
    line = (
        "DSmooth certifies horse: p_lower = 0.9931, R = 0.6186 (Mahalanobis distance of St), ceiling 0.7725, "
        "top class votes 1000 / 1000"
    )
    match = bench.CERT_LINE.match(line)
    assert match and (match[1], match[3], match[4], match[5]) == ("DSmooth", "horse", "0.9931", "0.6186")
    abstains = bench.CERT_LINE.match("LSmooth abstains: p_lower = 0.4100, R = 0 (l1), ceiling 0.5")
    assert abstains and abstains[3] is None and abstains[5] == "0"


SETTINGS = {"sigma": "0.25", "n0": "100", "n": "1000", "alpha": "0.001", "batch": "100", "seed": "3"}


def _finished(session: int, queries: int, **settings: str) -> dict:
    """A finished session as the benchmark records it: seed = session, its page's certify settings."""
    return {
        "session": session,
        "seed": session,
        "image": 5400,
        "settings": {**SETTINGS, "seed": str(session), **settings},
        "attack": {"used": {"seed": session, "queries": queries}},
    }


def test_a_session_that_ran_other_settings_than_its_links_is_named() -> None:
    bench = _bench()
    options = bench.Options(queries=200, n=None, distinct_seeds=True)
    assert bench.other_settings([_finished(3, 200), _finished(4, 200)], options) == []
    (lost,) = bench.other_settings([_finished(3, 200), _finished(4, 1000)], options)  # the default budget
    assert lost == "session 4 attack ran with {'seed': 4, 'queries': 1000}, not {'seed': 4, 'queries': 200}"
    (drifted,) = bench.other_settings([_finished(3, 200), _finished(4, 200, sigma="0.5")], options)
    assert "certify settings differ beyond their seeds" in drifted
    defaults = bench.Options(queries=None, n=None, distinct_seeds=False)  # the preset's 1,000 queries
    assert bench.other_settings([_finished(0, 1000)], defaults) == []


def test_the_library_runs_the_settings_the_links_asked_for() -> None:
    bench = _bench()
    case = bench.case_of(_finished(7, 200, n="1000"), bench.Options(queries=200, n=300, distinct_seeds=True))
    assert (case["queries"], case["seed"], case["image"]) == (200, 7, 5400)
    assert case["settings"] == {**SETTINGS, "n": "300", "seed": "7"}


@pytest.mark.browser
@pytest.mark.slow
def test_quick_mode_runs_two_sessions_with_correct_results(tmp_path: Path, app_data_dir: Path) -> None:
    """``--sessions 2``: the smoke run; both sessions' attacks and certificates equal the library's."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DSMOOTH_DATA_DIR": str(app_data_dir)}
    command = [sys.executable, str(BENCH), "--sessions", "2", "--spread", "2", "--queries", "50", "--n", "100"]
    out = subprocess.run([*command, "--results", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "all 4 results equal to the library's: True" in out.stdout, out.stdout
    (written,) = tmp_path.glob("bench_classroom-*.json")
    result = json.loads(written.read_text())
    assert result["tables"]["total"][0]["all results equal the library's"] is True
    assert {row["job"]: row["finished"] for row in result["tables"]["jobs"]} == {"attack": 2, "certify": 2}
