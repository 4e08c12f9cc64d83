"""The Certify page after an attack: did it fool the base model, and the smoothed classifier at x + delta."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from dsmooth_core import IsotropicGaussian, predict
from dsmooth_core.attacks import PRESETS, square_then_fgsm
from dsmooth_core.device import generator_for
from dsmooth_core.models import CIFAR10_CLASSES, DEFAULT_MODEL, load_model
from dsmooth_core.models.preprocess import prepare_image
from dsmooth_core.seeds import derive_seed
from dsmooth_lab_ui import attack_outcome_view, gallery, nav, state
from tests.test_app_pages import assert_clean, button, finish_job, new_app, texts

QUERIES = 20
N = 50
SIGMA = 0.12  # the bundled model's smoothed answer at the paper threat's attacked horse differs from the clean one's


def _fooled_by(model: torch.nn.Module, sample: gallery.Sample, preset: str) -> bool:
    """Whether the Attack page's run (seed 0, QUERIES queries) fools the model on a sample it gets right."""
    x = prepare_image(Image.fromarray(gallery.pixels(sample.file)), model.info)
    label = torch.tensor([CIFAR10_CLASSES.index(sample.cifar10_class)])
    config = dataclasses.replace(PRESETS[preset], n_queries=QUERIES)
    result = square_then_fgsm(model, x.unsqueeze(0), label, config, generator=generator_for(model, 0))
    return bool(result.clean_pred[0] == label[0]) and bool(result.success[0])


@pytest.fixture(scope="module")
def samples() -> dict[str, gallery.Sample]:
    """A gallery image the paper threat fools, and one the weak reachable threat does not (both right when clean)."""
    model = load_model(DEFAULT_MODEL)
    labelled = [s for s in gallery.samples() if s.cifar10_class]
    fooled = next(s for s in labelled if _fooled_by(model, s, "paper"))
    resisted = next(s for s in labelled if not _fooled_by(model, s, "reachable") and _right(model, s))
    return {"fooled": fooled, "resisted": resisted}


def _right(model: torch.nn.Module, sample: gallery.Sample) -> bool:
    x = prepare_image(Image.fromarray(gallery.pixels(sample.file)), model.info)
    return int(model(x.unsqueeze(0)).argmax()) == CIFAR10_CLASSES.index(sample.cifar10_class)


def _attack_and_certify(sample: gallery.Sample, preset: str, sigma: float = 0.25):
    at = new_app(**{state.PROFILE_DEFAULT_TRIED: True, state.IMAGE: gallery.choice(sample)}).run()
    at.switch_page(nav.ATTACK).run()
    at.selectbox(key="atk_preset").set_value(preset).run()
    at.number_input(key="atk_n_queries").set_value(QUERIES).run()
    button(at, "Run the attack").click()
    finish_job(at)
    at.switch_page(nav.CERTIFY).run()
    at.multiselect(key="cert_methods").set_value(["RandSmooth"])
    at.number_input(key="cert_n0").set_value(10)
    at.number_input(key="cert_sigma").set_value(sigma)
    at.number_input(key="cert_n").set_value(N)
    at.run()
    button(at, "Certify").click()
    finish_job(at)
    assert_clean(at)
    return at


def test_a_successful_attack_is_checked_against_the_smoothed_classifier(app_env: Path, samples) -> None:
    at = _attack_and_certify(samples["fooled"], "paper", SIGMA)
    attack, record = at.session_state[state.ATTACK], at.session_state[state.CERTIFY]
    assert record.attacked is not None and record.attacked.attack is attack
    model = load_model(DEFAULT_MODEL)
    batch = at.number_input(key="cert_batch").value

    def smoothed(x: torch.Tensor) -> int:  # PREDICT with the certificate's noise, n and alpha, on the documented stream
        generator = generator_for(model, derive_seed(0, 0, "randsmooth:adversarial"))
        return predict(model, x, IsotropicGaussian(SIGMA), N, 0.001, batch, generator)

    expected = smoothed(attack.result.adversarial[0])
    assert record.attacked.predictions == {"RandSmooth": expected}
    assert expected != smoothed(attack.result.clean[0])  # so the check tells the attacked image from the clean one
    classes = model.info.class_names
    verdict = "right" if expected == attack.label else "fooled"
    words = "abstains" if expected == -1 else f"{classes[expected]} ({verdict})"
    page = texts(at)
    assert "Attack fooled the base model: yes" in page
    assert f"smoothed classifier at the attacked image: **{words}**" in page
    # the answer is part of the certification's record: it survives a page switch
    at.switch_page(nav.MODEL_IMAGE).run()
    at.switch_page(nav.CERTIFY).run()
    assert_clean(at)
    assert f"smoothed classifier at the attacked image: **{words}**" in texts(at)


def test_an_attack_that_failed_asks_the_smoothed_classifier_nothing(app_env: Path, samples) -> None:
    at = _attack_and_certify(samples["resisted"], "reachable")
    assert at.session_state[state.CERTIFY].attacked is None  # no PREDICT drawn
    page = texts(at)
    assert "Attack fooled the base model: no** (still right)" in page
    assert "smoothed classifier at the attacked image: **not run**" in page
    assert "Certify again" not in page


def test_the_smoothed_answer_in_words() -> None:
    classes = ("plane", "car", "cat", "dog")
    assert attack_outcome_view.smoothed_answer(2, 2, classes) == "cat (right)"
    assert attack_outcome_view.smoothed_answer(3, 2, classes) == "dog (fooled)"
    assert attack_outcome_view.smoothed_answer(-1, 2, classes) == "abstains"
    assert attack_outcome_view.smoothed_answer(None, 2, classes) == "not run"
