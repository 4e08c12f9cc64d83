"""Background jobs: the queue limit, Cancel, the thread budget, and jobs in the app (AppTest).

The app tests start a certification long enough to outlive several reruns, then check that it
survives a page switch and a widget change, that Cancel stops it and keeps nothing, and that
another session sees none of it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from dsmooth_core import certify
from dsmooth_core.models import CIFAR10_CLASSES, DEFAULT_MODEL, ModelInfo, load_model, prepare_image, wrap
from dsmooth_core.noise import make_noise
from dsmooth_lab_ui import gallery, jobs, lesson_defaults, nav, scheduler, state, threads
from dsmooth_lab_ui.model_upload import ModelCard
from tests.test_app_pages import APP, assert_clean, button, finish_job, new_app
from tests.worker_work import HangsOnLargeBatches

LONG_N = 6000  # RandSmooth draws: several seconds on one CPU thread
BATCH = 100


# ---------------------------------------------------------------- the thread-budget rule
@pytest.mark.parametrize(
    ("batch", "cores", "fixed", "expected"),
    [
        (1, 2, None, 1),  # Square's batch-1 loop
        (1, 64, None, 1),
        (32, 16, None, 1),  # small batches: one thread
        (200, 2, None, 1),  # large batch on a 2-core machine: leave a core to the server and browser
        (200, 4, None, 3),
        (1000, 64, None, threads.MAX_THREADS),
        (200, 1, None, 1),
        (1, 8, 4, 4),  # the setting wins ...
        (1000, 2, 8, 2),  # ... capped at the cores there are
    ],
)
def test_thread_budget_rule(batch: int, cores: int, fixed: int | None, expected: int) -> None:
    assert threads.budget(batch, cores, fixed) == expected


def test_thread_setting_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.ENV, "auto")
    assert threads.setting() is None
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.setting() == 3
    monkeypatch.setenv(threads.ENV, "zero")
    with pytest.raises(ValueError, match=threads.ENV):
        threads.setting()


def test_the_pages_own_work_gets_the_batch_one_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(threads.ENV, "auto")
    assert threads.for_batch(1) == 1
    monkeypatch.setenv(threads.ENV, "64")
    assert threads.for_batch(1) == threads.usable_cores()  # a fixed setting wins, capped at the cores


def test_streamlit_skips_its_full_collection_after_every_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """runner.postScriptGC ran gc.collect(2) after every run and fragment run: 2.2 s of a 3.9 s attack.

    Read as ``make run`` starts the app: Streamlit's own config reader, from the project folder.
    """
    from streamlit import config

    monkeypatch.chdir(APP.parent)
    config.get_config_options(force_reparse=True)
    assert config.get_option("runner.postScriptGC") is False


# ---------------------------------------------------------------- the manager, without streamlit
def _job(work, key: str = "k") -> scheduler.Job:
    return scheduler.Job(kind="test", title=f"job {key}", key=key, work=work, deliver=lambda _: None, threads=1)


def _wait(job: scheduler.Job, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while job.active:
        assert time.monotonic() < deadline, f"{job.title} still {job.state}"
        time.sleep(0.01)


def test_queue_limit_holds_a_second_job_until_the_first_ends() -> None:
    manager = scheduler.JobManager(slots=1)
    release = threading.Event()
    seen_running: list[int] = []

    def blocking(progress) -> str:
        seen_running.append(manager.running_count())
        release.wait(30)
        return "first"

    first, second = _job(blocking, "a"), _job(lambda progress: "second", "b")
    manager.submit(first)
    while first.state != scheduler.RUNNING:
        time.sleep(0.01)
    manager.submit(second)
    time.sleep(0.3)
    assert second.state == scheduler.QUEUED and manager.ahead_of(second) == 1
    release.set()
    _wait(second)
    assert (first.state, first.result) == (scheduler.DONE, "first")
    assert (second.state, second.result) == (scheduler.DONE, "second")
    assert seen_running == [1] and manager.running_count() == 0
    assert first.finished <= second.started
    assert manager.cached("a") == (True, "first")


def test_the_panel_wakes_as_soon_as_its_job_changes_state() -> None:
    """The panel's fragment waits on the job rather than polling, so a finished job is shown at once."""
    manager = scheduler.JobManager(slots=1)
    release = threading.Event()
    job = _job(lambda progress: release.wait(30), "wake")
    manager.submit(job)
    assert scheduler.changed_within(job, scheduler.QUEUED, 30) and job.state == scheduler.RUNNING
    assert not scheduler.changed_within(job, scheduler.RUNNING, 0.05)  # still running: the wait runs out
    threading.Timer(0.2, release.set).start()
    assert scheduler.changed_within(job, scheduler.RUNNING, 30) and job.state == scheduler.DONE
    assert scheduler.changed_within(job, scheduler.DONE, 0)  # a drawn state that is over: nothing to wait for


def test_a_job_cancelled_in_the_queue_wakes_its_panel() -> None:
    manager = scheduler.JobManager(slots=1)
    release = threading.Event()
    first, second = _job(lambda progress: release.wait(30), "first"), _job(lambda progress: "never", "second")
    manager.submit(first)
    manager.submit(second)
    second.cancel.set()
    assert scheduler.changed_within(second, scheduler.QUEUED, 30) and second.state == scheduler.CANCELLED
    release.set()
    _wait(first)


def test_a_job_marked_uncacheable_delivers_but_is_not_remembered() -> None:
    manager = scheduler.JobManager(slots=1)
    kept, fresh = _job(lambda progress: "kept", "a"), _job(lambda progress: "fresh", "b")
    fresh.cache = False
    for job in (kept, fresh):
        manager.submit(job)
        _wait(job)
    assert (kept.result, fresh.result) == ("kept", "fresh")
    assert manager.cached("a") == (True, "kept") and manager.cached("b") == (False, None)


def test_cancel_stops_certify_within_one_batch_and_keeps_nothing() -> None:
    model = load_model(DEFAULT_MODEL)
    x = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    noise = make_noise("randsmooth", 0.25)
    manager = scheduler.JobManager(slots=1)
    stop_at: list[int] = []

    def work(progress) -> object:
        def watch(done: int, total: int) -> bool:
            if done >= 3 * BATCH and not stop_at:
                stop_at.append(done)
                job.cancel.set()  # what the Cancel button does
            return progress(done, total)

        return certify(model, x, noise, 10, LONG_N, 0.001, BATCH, torch.Generator().manual_seed(0), progress=watch)

    job = _job(work, "cancel")
    manager.submit(job)
    _wait(job)
    assert job.state == scheduler.CANCELLED and job.result is None
    assert job.done == stop_at[0]  # the next report raised Cancelled: no further batch ran
    assert manager.cached("cancel") == (False, None)


def test_a_failing_job_keeps_its_message_and_stores_nothing() -> None:
    manager = scheduler.JobManager(slots=1)

    def broken(progress) -> None:
        raise ValueError("too few perturbations to fit a covariance")

    job = _job(broken, "broken")
    manager.submit(job)
    _wait(job)
    assert job.state == scheduler.FAILED and "too few perturbations" in job.error
    assert manager.cached("broken") == (False, None)


# ---------------------------------------------------------------- jobs in the app
def _start_long_certify(at: AppTest, seed: int = 7, n: int = LONG_N) -> scheduler.Job:
    at.switch_page(nav.CERTIFY).run()
    at.multiselect(key="cert_methods").set_value(["RandSmooth"])
    for key, value in (("cert_n0", 20), ("cert_n", n), ("cert_batch", BATCH), ("cert_seed", seed)):
        at.number_input(key=key).set_value(value)
    at.run()
    button(at, "Certify").click()
    at.run()
    assert_clean(at)
    return at.session_state[jobs.SESSION_JOB]


def test_a_job_survives_a_page_switch_and_a_widget_change(app_env: Path) -> None:
    scheduler.MANAGER.clear()
    at = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    job = _start_long_certify(at)
    at.switch_page(nav.NOISE).run()
    at.number_input(key="noise_seed").set_value(3).run()
    assert_clean(at)
    assert job.active, "the job should still be running after the page switch (make LONG_N larger)"
    assert at.session_state[state.CERTIFY] is None
    assert any(p.proto.text.startswith("Certification") for p in at.get("progress")), "the panel shows the job"
    at.switch_page(nav.CERTIFY)
    assert finish_job(at) is job and job.state == scheduler.DONE
    assert_clean(at)
    ((noise, got),) = at.session_state[state.CERTIFY].results
    assert noise.name == "RandSmooth"

    model = load_model(DEFAULT_MODEL)
    x = prepare_image(Image.fromarray(at.session_state[state.IMAGE].pixels), model.info)
    want = certify(model, x, make_noise("randsmooth", 0.25), 20, LONG_N, 0.001, BATCH, torch.Generator().manual_seed(7))
    assert got.prediction == want.prediction and got.radius == want.radius
    assert got.counts_estimation == want.counts_estimation and got.p_lower == want.p_lower


def test_cancel_in_the_app_stores_nothing_and_says_so(app_env: Path) -> None:
    scheduler.MANAGER.clear()
    at = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    job = _start_long_certify(at, seed=11)
    at.button(key="dsl_job_cancel").click().run()
    # the click's own run shows the outcome: Cancel waits for the job to stop at its next batch
    assert job.state == scheduler.CANCELLED and any(w.value.startswith("Cancelled:") for w in at.warning)
    finish_job(at)
    assert at.session_state[state.CERTIFY] is None
    assert any(
        w.value.startswith("Cancelled: Certification stopped") and scheduler.METHODS_KEPT in w.value for w in at.warning
    )


def test_two_sessions_never_see_each_others_jobs_or_results(app_env: Path) -> None:
    scheduler.MANAGER.clear()
    first = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    second = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    job = _start_long_certify(first, seed=13)
    second.switch_page(nav.CERTIFY).run()
    assert jobs.SESSION_JOB not in second.session_state and not second.get("progress")
    finish_job(first)
    assert job.state == scheduler.DONE and first.session_state[state.CERTIFY] is not None
    second.run()
    assert jobs.SESSION_JOB not in second.session_state
    assert second.session_state[state.CERTIFY] is None and not second.dataframe


@pytest.mark.slow  # two sessions and a fresh worker after the kill: about 14 s
def test_a_never_returning_upload_is_cancelled_within_seconds_and_another_sessions_job_runs(app_env: Path) -> None:
    """A trusted TorchScript upload that spins for good on batches over 50 (the certify batch is 100)."""
    scheduler.MANAGER.clear()
    hung_session = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    info = ModelInfo("hangs.pt", "cifar10", (3, 32, 32), CIFAR10_CLASSES, "upload")
    model = wrap(torch.jit.script(HangsOnLargeBatches(limit=50)), info)
    identity = model.info.identity
    card = ModelCard("hangs.pt", "TorchScript", "1" * 64, 0, (3, 32, 32), CIFAR10_CLASSES, "self", (), "none", identity)
    hung_session.session_state[state.UPLOADED_MODELS] = {identity: (model, card)}
    hung_session.session_state[state.MODEL] = state.ModelChoice("hangs.pt", upload=identity)
    hung = _start_long_certify(hung_session, seed=17)
    deadline = time.monotonic() + 120
    while hung.step != "RandSmooth: noise draws" or hung.done < 20:  # the selection draws (batch 20) are done
        assert hung.active and time.monotonic() < deadline, (hung.state, hung.error)
        time.sleep(0.02)
    assert hung.worker_pid not in (None, os.getpid())  # the program went to a worker as its bytes

    other_session = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    other = _start_long_certify(other_session, seed=19, n=300)
    assert other.state == scheduler.QUEUED and hung.state == scheduler.RUNNING
    asked = time.monotonic()
    hung_session.button(key="dsl_job_cancel").click().run()
    assert hung.state == scheduler.CANCELLED and time.monotonic() - asked < 10
    [said] = [w.value for w in hung_session.warning if w.value.startswith("Cancelled:")]
    assert "did not stop within 3 s of Cancel" in said and "worker process" in said and "was ended" in said
    assert scheduler.NOTHING_KEPT in said and scheduler.METHODS_KEPT not in said  # they were kept in that process

    assert finish_job(other_session) is other and other.state == scheduler.DONE, other.error
    ((_, got),) = other_session.session_state[state.CERTIFY].results
    bundled = load_model(DEFAULT_MODEL)
    x = prepare_image(Image.fromarray(other_session.session_state[state.IMAGE].pixels), bundled.info)
    want = certify(bundled, x, make_noise("randsmooth", 0.25), 20, 300, 0.001, BATCH, torch.Generator().manual_seed(19))
    assert (got.prediction, got.radius, got.counts_estimation) == (want.prediction, want.radius, want.counts_estimation)


def test_without_a_data_folder_the_first_page_shows_a_sample_and_its_prediction(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DSMOOTH_DATA_DIR")
    monkeypatch.chdir(tmp_path)  # the default ./data is empty here
    at = AppTest.from_file(str(APP), default_timeout=120).switch_page(nav.MODEL_IMAGE).run()
    assert_clean(at)
    image = at.session_state[state.IMAGE]
    # the guided lesson's offline pick, the app's default on every page (choices.default_image)
    assert image.source == gallery.SOURCE and image.image_id == f"gallery:{lesson_defaults.GALLERY_FILE}"
    assert image.pixels.shape == (32, 32, 3)
    assert [m.label for m in at.metric][:1] == ["Predicted class"]
    assert at.radio(key="image_source").value == "Sample gallery (offline)"
    assert any("probability_chart" in element.proto.id for element in at.get("plotly_chart"))
