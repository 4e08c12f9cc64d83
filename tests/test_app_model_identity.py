"""A re-uploaded model is a new model: the app never serves a result of the model uploaded before (AppTest).

Each case uploads a file (model A) and certifies with it, then the same file with one thing changed
that changes the model's outputs (model B): its normalization, its input size, or (TorchScript) its
program code with the very same weights. In a fresh session (which shares the server's caches) and
in the same session, the prediction the page shows and the certificate it keeps must be what
dsmooth_core computes on model B directly.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from dsmooth_core import IsotropicGaussian, certify
from dsmooth_core.device import generator_for
from dsmooth_core.models import prepare_image
from dsmooth_core.models.info import state_dict_hash
from dsmooth_core.models.model_file import ModelFileOptions, load_model_file
from dsmooth_lab_ui import nav, state
from tests.apptest_jobs import finish_job
from tests.user_models import ThirdPartyNet, torchscript_bytes

APP = Path(__file__).resolve().parents[1] / "app.py"
NAME = "net.pt"
SIGMA, N0, N, ALPHA, SEED = 0.5, 5, 30, 0.001, 0


class _DoubledNet(ThirdPartyNet):
    """The same parameters and buffers as ThirdPartyNet, another program: it doubles its input first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(2 * x - self.mean))


def doubled_bytes() -> bytes:
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_DoubledNet().eval()), buffer)
    return buffer.getvalue()


# name -> (file A, what is stated about A, file B, what is stated about B)
CASES = {
    "normalization": (torchscript_bytes, {"mu_norm": "self"}, torchscript_bytes, {"mu_norm": "imagenet"}),
    "input size": (torchscript_bytes, {"mu_size": "3,32,32"}, torchscript_bytes, {"mu_size": "3,16,16"}),
    "program code": (torchscript_bytes, {}, doubled_bytes, {}),
}


def _options(stated: dict[str, str]) -> ModelFileOptions:
    return ModelFileOptions(
        input_size=stated.get("mu_size", "3,32,32"),
        classes="cifar10",
        normalization=stated.get("mu_norm", "self"),
        trust_code=True,
    )


def upload(at: AppTest, data: bytes, stated: dict[str, str]) -> None:
    """Load ``data`` as the session's model through the Model & image page's upload form."""
    at.switch_page(nav.MODEL_IMAGE).run()
    next(u for u in at.file_uploader if u.key == "mu_file").upload(NAME, data, "application/octet-stream")
    at.run()
    at.checkbox(key="mu_trust").set_value(True)
    at.selectbox(key="mu_norm").set_value(stated.get("mu_norm", "self"))
    at.text_input(key="mu_size").set_value(stated.get("mu_size", "3,32,32"))
    at.run()
    next(b for b in at.button if b.key == "mu_load").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.session_state[state.MODEL].upload is not None


def shown_probabilities(at: AppTest) -> dict[str, float]:
    """The class probabilities the Model & image page draws, by class name (from the chart's data)."""
    (spec,) = [json.loads(e.proto.spec) for e in at.get("plotly_chart") if e.proto.id.endswith("probability_chart")]
    bars = spec["data"][0]
    values = bars["x"]
    if isinstance(values, dict):  # plotly writes numpy arrays as typed base64
        values = np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"])).tolist()
    return {label.removesuffix(" (true)"): float(v) for label, v in zip(bars["y"], values, strict=True)}


def certify_in_app(at: AppTest) -> tuple:
    """RandSmooth on the session's image with the test's settings; the certificate the page keeps."""
    at.switch_page(nav.CERTIFY).run()
    at.multiselect(key="cert_methods").set_value(["RandSmooth"])
    settings = {"cert_sigma": SIGMA, "cert_n0": N0, "cert_n": N, "cert_alpha": ALPHA, "cert_seed": SEED}
    for key, value in settings.items():
        at.number_input(key=key).set_value(value)
    at.run()
    next(b for b in at.button if b.label == "Certify").click()
    finish_job(at)
    assert not at.exception, [e.value for e in at.exception]
    ((_, certificate),) = at.session_state[state.CERTIFY].results
    return _outcome(certificate)


def _outcome(certificate) -> tuple:
    return (
        certificate.prediction,
        certificate.counts_selection,
        certificate.counts_estimation,
        certificate.p_lower,
        certificate.radius,
    )


def library_results(data: bytes, stated: dict[str, str], pixels: np.ndarray) -> tuple[dict[str, float], tuple]:
    """What dsmooth_core computes on the model directly: its probabilities and its certificate."""
    model = load_model_file(data, _options(stated), name=NAME)
    x = prepare_image(Image.fromarray(pixels), model.info)
    with torch.inference_mode():
        probabilities = torch.softmax(model(x.unsqueeze(0)), dim=1)[0].tolist()
    certificate = certify(model, x, IsotropicGaussian(SIGMA), N0, N, ALPHA, 200, generator_for(model, SEED))
    return dict(zip(model.info.class_names, probabilities, strict=True)), _outcome(certificate)


def check_shows(at: AppTest, data: bytes, stated: dict[str, str]) -> None:
    """The session's page shows the library's prediction and certificate for this model."""
    expected_probabilities, expected_certificate = library_results(data, stated, at.session_state[state.IMAGE].pixels)
    at.switch_page(nav.MODEL_IMAGE).run()
    shown = shown_probabilities(at)
    assert shown == pytest.approx({name: expected_probabilities[name] for name in shown}, abs=1e-6)
    assert certify_in_app(at) == expected_certificate


def new_session() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=240).switch_page(nav.MODEL_IMAGE)
    at.session_state[state.PROFILE_DEFAULT_TRIED] = True
    return at.run()


def test_the_cases_keep_the_file_name_and_weights() -> None:
    """What makes each case a trap for a cache keyed by file name and weights hash (the app's key before)."""
    for make_a, stated_a, make_b, stated_b in CASES.values():
        model_a = load_model_file(make_a(), _options(stated_a), name=NAME)
        model_b = load_model_file(make_b(), _options(stated_b), name=NAME)
        assert state_dict_hash(model_a.net) == state_dict_hash(model_b.net)
        assert model_a.info.name == model_b.info.name


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_reupload_with_one_change_gets_the_new_models_results(app_env, case: str) -> None:
    make_a, stated_a, make_b, stated_b = CASES[case]
    first = new_session()
    upload(first, make_a(), stated_a)
    pixels = first.session_state[state.IMAGE].pixels
    probabilities_a, certificate_a = library_results(make_a(), stated_a, pixels)
    probabilities_b, certificate_b = library_results(make_b(), stated_b, pixels)
    # so that a result of model A cannot pass for model B's (the test can fail)
    assert certificate_a != certificate_b and probabilities_a != pytest.approx(probabilities_b, abs=1e-6)
    check_shows(first, make_a(), stated_a)  # fills the server's caches with model A's results
    second = new_session()  # a fresh session: it shares those caches
    upload(second, make_b(), stated_b)
    check_shows(second, make_b(), stated_b)
    third = new_session()
    upload(third, make_a(), stated_a)
    identity_a = third.session_state[state.MODEL].upload
    upload(third, make_b(), stated_b)  # the same session: model A first, then B
    identity_b = third.session_state[state.MODEL].upload
    assert identity_a != identity_b and set(third.session_state[state.UPLOADED_MODELS]) == {identity_a, identity_b}
    check_shows(third, make_b(), stated_b)
