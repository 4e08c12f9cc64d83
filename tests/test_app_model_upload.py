"""Bring your own model in the app (AppTest): good files become the model on every page, bad ones change nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from dsmooth_core.models import DEFAULT_MODEL
from dsmooth_lab_ui import nav, state
from tests.apptest_jobs import finish_job
from tests.user_models import code_pickle_bytes, export_bytes, nan_bytes, state_dict_bytes, torchscript_bytes

APP = Path(__file__).resolve().parents[1] / "app.py"


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [e.value for e in at.error]
    return "\n".join(str(p) for p in parts)


def _upload(name: str, data: bytes, trust: bool = False, **choices: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240).switch_page(nav.MODEL_IMAGE).run()
    uploader = next(u for u in at.file_uploader if u.key == "mu_file")
    uploader.upload(name, data, "application/octet-stream")
    at.run()
    at.checkbox(key="mu_trust").set_value(trust)
    for key, value in choices.items():
        at.selectbox(key=key).set_value(value)
    at.run()
    next(b for b in at.button if b.key == "mu_load").click()
    return at.run()


@pytest.mark.parametrize(
    ("name", "make", "trust", "choices"),
    [
        ("net.pt", torchscript_bytes, True, {}),
        ("net.pt2", export_bytes, True, {}),
        ("resnet20.pt", state_dict_bytes, False, {"mu_arch": "resnet20", "mu_norm": "cifar10"}),
    ],
)
def test_uploaded_model_gets_a_card_and_serves_every_page(app_env, name, make, trust, choices):
    at = _upload(name, make(), trust, **choices)
    assert not at.exception, [e.value for e in at.exception]
    choice = at.session_state[state.MODEL]
    assert choice.upload is not None and choice.name == name
    text = _texts(at)
    assert "Model card" in text and "sha256" in text and "Parameters" in text and "Probe on 8" in text
    assert any(m.label == "Predicted class" for m in at.metric)
    at.switch_page(nav.ATTACK).run()
    at.number_input(key="atk_n_queries").set_value(5)
    next(b for b in at.button if b.label == "Run the attack").click()
    finish_job(at)
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[state.ATTACK].model_key == choice.upload  # the uploaded model's identity
    at.switch_page(nav.CERTIFY).run()
    at.multiselect(key="cert_methods").set_value(["RandSmooth"])
    at.number_input(key="cert_n0").set_value(5)
    at.number_input(key="cert_n").set_value(20)
    next(b for b in at.button if b.label == "Certify").click()
    job = finish_job(at)
    assert not at.exception, [e.value for e in at.exception]
    assert job.worker_pid is not None  # every format, programs too, runs in a worker process that Cancel can end
    record = at.session_state[state.CERTIFY]
    assert record.model_key == choice.upload and record.model_name == name
    assert "RandSmooth" in [noise.name for noise, _ in record.results]
    # loading the same file again takes the session's copy (kept by identity): the very same model object
    (key,) = at.session_state[state.UPLOADED_MODELS]
    first = at.session_state[state.UPLOADED_MODELS][key][0]
    at.switch_page(nav.MODEL_IMAGE).run()
    next(u for u in at.file_uploader if u.key == "mu_file").upload(name, make(), "application/octet-stream")
    at.checkbox(key="mu_trust").set_value(trust).run()
    next(b for b in at.button if b.key == "mu_load").click()
    at.run()
    assert not at.error, [e.value for e in at.error]
    assert list(at.session_state[state.UPLOADED_MODELS]) == [key]
    assert at.session_state[state.UPLOADED_MODELS][key][0] is first and at.session_state[state.MODEL].upload == key
    at.switch_page(nav.EXPERIMENTS).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(f"**Model** `{name}`" in m.value for m in at.markdown)


def test_programs_need_the_trust_choice_and_nothing_runs(app_env, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a program was loaded without the trust choice")

    monkeypatch.setattr(torch.jit, "load", never)
    at = _upload("net.pt", torchscript_bytes(), trust=False)
    assert not at.exception
    assert "programs and can run code" in "\n".join(e.value for e in at.error)
    assert at.session_state[state.MODEL].name == DEFAULT_MODEL


def test_bad_files_each_give_their_message_and_keep_the_model(app_env, tmp_path):
    marker = tmp_path / "code-ran"
    cases = [
        ("empty.pt", b"", False, {}, "empty (0 bytes)"),
        ("cut.pt", torchscript_bytes()[:2000], True, {}, "not a TorchScript, torch.export or state-dict"),
        ("evil.pt", code_pickle_bytes(marker), False, {"mu_arch": "resnet20"}, "Pickled Python objects are never"),
        ("r20.pt", state_dict_bytes("resnet20"), False, {"mu_arch": "resnet32"}, "does not match resnet32"),
        ("five.pt", torchscript_bytes(outputs=5), True, {}, "10 class names given but the model has 5"),
        ("nan.pt", nan_bytes(), True, {}, "non-finite logits"),
    ]
    for name, data, trust, choices, message in cases:
        at = _upload(name, data, trust, **choices)
        assert not at.exception, name
        errors = "\n".join(e.value for e in at.error)
        assert message in errors and "previous model stays selected" in errors, (name, errors)
        assert at.session_state[state.MODEL].name == DEFAULT_MODEL and at.session_state[state.MODEL].upload is None
    assert not marker.exists()
