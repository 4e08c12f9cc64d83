"""The app on the ONNX Runtime backend (AppTest): the Certify page names the forward that certifies, shows
why a model stays on torch, says which n this machine affords, and never serves one engine's certificate
for the other's request (the engines may differ by a few near-tie votes); the attack's Square queries run
on the same forward and are keyed by it.
"""

from __future__ import annotations

import dataclasses
import io
import re
import time

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest
from torch import nn

from dsmooth_core import IsotropicGaussian, radius_ceiling
from dsmooth_core.attacks import PRESETS, square_then_fgsm
from dsmooth_core.backends import OnnxForward, inference_model, onnx_graph, spare_cores
from dsmooth_core.device import generator_for
from dsmooth_core.models import CIFAR10_CLASSES, DEFAULT_MODEL, ModelInfo, load_model, wrap
from dsmooth_core.models.preprocess import prepare_image
from dsmooth_lab_ui import forward, nav, state, threads
from tests import worker_work
from tests.apptest_jobs import finish_job
from tests.test_app_model_identity import new_session, upload
from tests.test_backends import VOTE_SLACK
from tests.user_models import export_bytes

SIGMA, N0, N, ALPHA, SEED = 0.5, 10, 60, 0.01, 0


class BesselHead(nn.Module):
    """A small net ending in the Bessel function i0: an op neither ONNX exporter translates."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 3, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.i0(self.conv(x).mean(dim=(2, 3)))


def bessel_bytes() -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(BesselHead().eval()), buffer)
    return buffer.getvalue()


@pytest.fixture
def onnx_app(app_env, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app with ``DSMOOTH_BACKEND=onnxruntime`` and a graph cache of its own."""
    monkeypatch.setenv("DSMOOTH_BACKEND", "onnxruntime")
    monkeypatch.setenv(onnx_graph.CACHE_ENV, str(tmp_path / "cache"))


def certify(at: AppTest) -> tuple[object, object]:
    """RandSmooth with the test's settings; the certificate the page keeps, and the job (None: from the cache)."""
    at.switch_page(nav.CERTIFY).run()
    at.multiselect(key="cert_methods").set_value(["RandSmooth"])
    for key, value in {"cert_sigma": SIGMA, "cert_n0": N0, "cert_n": N, "cert_alpha": ALPHA, "cert_seed": SEED}.items():
        at.number_input(key=key).set_value(value)
    at.run()
    next(b for b in at.button if b.label == "Certify").click()
    job = finish_job(at)
    assert not at.exception, [e.value for e in at.exception]
    return at.session_state[state.CERTIFY], job


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_an_unexportable_upload_certifies_on_torch_and_the_page_says_why(onnx_app) -> None:
    at = new_session()
    upload(at, bessel_bytes(), {})
    at.switch_page(nav.CERTIFY).run()
    notes = [i.value for i in at.info if "cannot run on onnxruntime" in i.value]
    assert len(notes) == 1 and notes[0].startswith("note: model") and notes[0].endswith("using torch"), notes
    assert "Forward: torch. An uploaded model's rate is not measured" in captions(at)  # it may never return
    record, job = certify(at)
    assert job is not None and record.forward == "torch"
    assert "forward: torch" in captions(at).splitlines()


def test_each_engine_gets_its_own_certificates_and_the_page_names_it(onnx_app, monkeypatch) -> None:
    data = export_bytes()  # a torch.export program: the dynamo exporter translates it
    first = new_session()
    upload(first, data, {})
    onnx, job = certify(first)
    assert job is not None and onnx.forward == "onnxruntime"
    assert "forward: onnxruntime" in captions(first).splitlines()

    monkeypatch.setenv("DSMOOTH_BACKEND", "torch")  # the same inputs, asked of the other engine
    second = new_session()
    upload(second, data, {})
    eager, job = certify(second)
    assert job is not None, "a certificate of onnxruntime was served for a torch request"
    assert eager.forward == "torch" and "forward: torch" in captions(second).splitlines()
    ((_, fast),), ((_, slow),) = onnx.results, eager.results
    assert fast.prediction == slow.prediction
    assert all(abs(a - b) <= VOTE_SLACK for a, b in zip(fast.counts_estimation, slow.counts_estimation, strict=True))

    monkeypatch.setenv("DSMOOTH_BACKEND", "onnxruntime")
    third = new_session()
    upload(third, data, {})
    again, job = certify(third)
    assert job is None and again.forward == "onnxruntime"  # the first session's result, from the cache
    assert again.results[0][1] == fast


def test_the_page_says_which_n_this_machine_affords(onnx_app) -> None:
    at = new_session()  # the bundled model: an upload's rate is not measured in the server
    at.switch_page(nav.CERTIFY).run()
    at.multiselect(key="cert_methods").set_value(["RandSmooth"])
    at.number_input(key="cert_sigma").set_value(SIGMA)
    at.number_input(key="cert_alpha").set_value(ALPHA)
    at.run()
    line = next(c.value for c in at.caption if c.value.startswith("Forward: onnxruntime, about"))
    rate = float(re.search(r"about ([0-9,]+) images/s", line)[1].replace(",", ""))
    n = int(re.search(r"n = ([0-9,]+) certifies RandSmooth in about 5 s", line)[1].replace(",", ""))
    assert rate > 0 and n % 100 == 0
    thread_count = threads.for_batch(int(at.number_input(key="cert_batch").value))
    lent = threads.spare(thread_count) if spare_cores.supported() else 0
    assert (f"and the idle time of {lent} more core" in line) == (lent > 0), line  # measured as a job runs
    # the ceiling that n allows, from the core's own function, in the method's metric
    assert f"RandSmooth {radius_ceiling(IsotropicGaussian(SIGMA), n, ALPHA):.3g} (l2)" in line


def attack(at: AppTest, queries: int, seed: int) -> tuple[state.AttackRecord, object]:
    """The Attack page's run on the session's image (paper preset, ``queries``); its record and job (None: cached)."""
    at.switch_page(nav.ATTACK).run()
    at.selectbox(key="atk_preset").set_value("paper").run()
    at.number_input(key="atk_n_queries").set_value(queries)
    at.number_input(key="atk_seed").set_value(seed)
    at.run()
    next(b for b in at.button if b.label == "Run the attack").click()
    job = finish_job(at)
    assert not at.exception, [e.value for e in at.exception]
    return at.session_state[state.ATTACK], job


def test_the_attack_queries_the_certify_forward_and_is_keyed_by_it(onnx_app, monkeypatch) -> None:
    queries, seed = 40, 3
    first = new_session()
    record, job = attack(first, queries, seed)
    assert job is not None and record.forward == "onnxruntime"
    assert isinstance(job.work.args[0], OnnxForward)  # the model the job's Square queried
    assert "Square's queries ran on onnxruntime, FGSM's gradient on torch." in captions(first)

    # the library on the same forward and draws gives the same attack, image for image
    bundled = load_model(DEFAULT_MODEL)
    fast, _ = inference_model(bundled, "onnxruntime")
    assert isinstance(fast, OnnxForward)
    x = prepare_image(Image.fromarray(first.session_state[state.IMAGE].pixels), bundled.info).unsqueeze(0)
    config = dataclasses.replace(PRESETS["paper"], n_queries=queries)
    want = square_then_fgsm(fast, x, torch.tensor([record.label]), config, generator=generator_for(fast, seed))
    assert torch.equal(record.result.adversarial, want.adversarial)

    monkeypatch.setenv("DSMOOTH_BACKEND", "torch")  # the same inputs, asked of the other engine
    second = new_session()
    eager, job = attack(second, queries, seed)
    assert job is not None, "an attack made on onnxruntime was served for a torch request"
    assert eager.forward == "torch" and not isinstance(job.work.args[0], OnnxForward)


def test_an_uploaded_program_is_exported_in_a_worker_that_is_ended_when_it_hangs(onnx_app, monkeypatch) -> None:
    """Exporting and probing a program run it: never in the server, and a worker that hangs is ended."""
    monkeypatch.setenv("DSMOOTH_JOB_STALL_SECONDS", "2")
    monkeypatch.setattr(forward.tasks, "onnx_graph", worker_work.export_never_returns)

    def in_the_server(*args, **kwargs):
        raise AssertionError("the server ran an uploaded program's export")

    monkeypatch.setattr(forward, "inference_model", in_the_server)
    info = ModelInfo("scripted.pt", "cifar10", (3, 32, 32), CIFAR10_CLASSES, "upload")
    program = wrap(torch.jit.script(worker_work.HangsOnLargeBatches(limit=10**6)), info)
    start = time.monotonic()
    fast = forward._exported_in_worker(program, "onnxruntime")
    assert time.monotonic() - start < 60
    assert fast.name == "torch" and fast.model is program and fast.fell_back
    assert "exporting the uploaded program to onnxruntime failed" in fast.note
    assert "no progress report for 2 s" in fast.note


class RefusesToRun(nn.Module):
    """A program that fails when called: measuring its rate in the server would run it."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            raise RuntimeError("the server ran an uploaded program to measure its rate")
        return self.linear(x.flatten(1))


def test_the_rate_is_measured_for_every_forward_but_an_uploaded_program() -> None:
    info = ModelInfo("refuses.pt", "cifar10", (3, 32, 32), CIFAR10_CLASSES, "upload")
    program = wrap(torch.jit.script(RefusesToRun()), info)
    assert forward.rate(forward.Forward(program, "torch", "forward: torch"), 20) is None
    bundled = load_model(DEFAULT_MODEL)  # library code: measured
    per_second, thread_count = forward.rate(forward.Forward(bundled, "torch", "forward: torch"), 20)
    assert per_second > 0 and thread_count >= 1
