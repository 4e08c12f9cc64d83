"""The Certify page's audit panel (AppTest): consistent and refuted certificates, its background job and Cancel."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

from PIL import Image
from streamlit.testing.v1 import AppTest

from dsmooth_core.models import ModelInfo, prepare_image, wrap
from dsmooth_lab_ui import audit_view, jobs, nav, scheduler, state
from dsmooth_lab_ui.model_upload import ModelCard
from tests.apptest_jobs import wait_for_job
from tests.worker_work import MeanBrightness

APP = Path(__file__).resolve().parents[1] / "app.py"


MARGIN = 0.05  # the boundary lies 0.05 sqrt(3072) = 2.77 away in l2


def _certified_app() -> AppTest:
    """The Certify page with RandSmooth and LSmooth certificates of MeanBrightness on the default image."""
    scheduler.MANAGER.clear()  # every test computes its own certificates and audits, none from another's cache
    at = AppTest.from_file(str(APP), default_timeout=240).switch_page(nav.MODEL_IMAGE)
    at.session_state[state.PROFILE_DEFAULT_TRIED] = True
    at.run()
    info = ModelInfo("mean-brightness", "custom", (3, 32, 32), ("dark", "bright"), "test")
    x = prepare_image(Image.fromarray(at.session_state[state.IMAGE].pixels), info)
    model = wrap(MeanBrightness(float(x.mean()) - MARGIN), info)
    identity = model.info.identity
    card = ModelCard("mean.pt", "test", "0" * 64, 0, (3, 32, 32), info.class_names, "self", (), "none", identity)
    at.session_state[state.UPLOADED_MODELS] = {identity: (model, card)}
    at.session_state[state.MODEL] = state.ModelChoice("mean.pt", upload=identity)
    at.switch_page(nav.CERTIFY).run()
    at.multiselect(key="cert_methods").set_value(["RandSmooth", "LSmooth"])
    at.number_input(key="cert_n0").set_value(10)
    at.number_input(key="cert_n").set_value(50)
    at.run()
    next(b for b in at.button if b.label == "Certify").click()
    at.run()
    _wait_for_job(at)
    record = at.session_state[state.CERTIFY]
    assert all(cert.prediction == 1 for _, cert in record.results)
    for key, value in (("aud_n", 50), ("aud_draws", 2), ("aud_steps", 2), ("aud_bisection", 3)):
        at.number_input(key=key).set_value(value)
    return at.run()


def _wait_for_job(at: AppTest, timeout: float = 240) -> scheduler.Job | None:
    """Wait for the session's background job to end, deliver its result, and check the page is clean."""
    job = wait_for_job(at, timeout)
    assert not at.exception, [e.value for e in at.exception]
    return job


def _start_audit(at: AppTest, method: str) -> scheduler.Job | None:
    next(b for b in at.button if b.key == f"audit_{method}").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at.session_state.get(jobs.SESSION_JOB)


def _audit(at: AppTest, method: str) -> AppTest:
    _start_audit(at, method)
    _wait_for_job(at)
    return at


def _chart_ids(at: AppTest) -> list[str]:
    return [element.proto.id for element in at.get("plotly_chart")]


def test_audit_shows_both_bounds_in_the_certificates_metric(app_env):
    at = _certified_app()
    record = at.session_state[state.CERTIFY]
    _audit(at, "RandSmooth")
    view = at.session_state[state.AUDIT]["RandSmooth"]
    certificates = {noise.name: cert for noise, cert in record.results}
    assert view.result.metric == "l2" and view.result.certified_radius == certificates["RandSmooth"].radius
    assert view.result.verdict in ("consistent", "violation")
    assert any(i.endswith("audit_chart_RandSmooth") for i in _chart_ids(at))
    boxes = "\n".join(b.value for b in [*at.success, *at.error])
    assert "RandSmooth" in boxes and "(l2)" in boxes
    job = at.session_state[jobs.SESSION_JOB]
    assert job.kind == audit_view.JOB and job.state == scheduler.DONE
    assert job.worker_pid not in (None, os.getpid())  # submitted like every job: it ran in the worker
    assert any(c.value.startswith("Audit of RandSmooth: done in") for c in at.caption)  # the job panel


def test_a_radius_forty_times_too_large_is_refuted_with_the_perturbation_shown(app_env):
    at = _certified_app()
    record = at.session_state[state.CERTIFY]
    position = next(i for i, (noise, _) in enumerate(record.results) if noise.name == "RandSmooth")
    noise, honest = record.results[position]
    wrong = dataclasses.replace(honest, radius=40 * honest.radius)  # a wrong certificate on purpose
    record.results[position] = (noise, wrong)
    assert wrong.radius > 2 * MARGIN * 3072**0.5
    _audit(at, "RandSmooth")
    result = at.session_state[state.AUDIT]["RandSmooth"].result
    assert result.violated and result.empirical_bound < result.certified_radius
    assert any("Violation" in e.value and "refuted" in e.value for e in at.error)
    captions = [img.caption for element in at.main.get("image") for img in element.proto.imgs]
    assert any(c.startswith("perturbation") for c in captions) and "x + perturbation: dark" in captions


def test_cancel_stops_the_audit_and_keeps_nothing(app_env):
    at = _certified_app()
    [(model, _)] = at.session_state[state.UPLOADED_MODELS].values()
    model.net.delay = 0.2  # every model call of the audit now takes 0.2 s: long enough to cancel midway
    job = _start_audit(at, "LSmooth")
    assert job is not None and job.kind == audit_view.JOB
    deadline = time.monotonic() + 120
    while job.done == 0:  # a progress report came back from the worker
        assert time.monotonic() < deadline and job.active, f"the audit never got midway ({job.state})"
        time.sleep(0.02)
    assert job.worker_pid not in (None, os.getpid())
    at.button(key="dsl_job_cancel").click().run()  # the job panel's Cancel button
    _wait_for_job(at)
    assert job.state == scheduler.CANCELLED and job.error is None  # it stopped at its next report, not by force
    assert "LSmooth" not in (at.session_state.get(state.AUDIT) or {})
    assert any(w.value.startswith("Cancelled: Audit of LSmooth stopped") for w in at.warning)


def test_a_stale_audit_is_not_shown_for_another_certificate(app_env):
    at = _certified_app()
    _audit(at, "RandSmooth")
    view = at.session_state[state.AUDIT]["RandSmooth"]
    at.session_state[state.AUDIT] = {"RandSmooth": dataclasses.replace(view, image_id="another image")}
    at.run()
    assert not any(i.endswith("audit_chart_RandSmooth") for i in _chart_ids(at))
