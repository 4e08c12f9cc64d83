"""The guided lesson (pages/lesson.py): the default page, its eight steps, their links, its measured defaults.

The app runs under AppTest on CIFAR-10 from DSMOOTH_DATA_DIR (a tiny fake copy when absent, see
conftest.py) or, for the offline case, on an empty data folder (the gallery). The numbers the steps
show are checked against the library's, computed here with the same seeds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from dsmooth_core import certify
from dsmooth_core.attacks import PRESETS, square_then_fgsm
from dsmooth_core.data import load_cifar10
from dsmooth_core.device import generator_for
from dsmooth_core.experiments import load_experiment_model
from dsmooth_core.models import DEFAULT_MODEL, prepare_image
from dsmooth_core.noise import METHODS, make_noise
from dsmooth_core.profiles import ThreatProfile
from dsmooth_core.settings import ProfileShape
from dsmooth_lab_ui import gallery, lesson, lesson_defaults, links, nav, state
from tests import apptest_jobs
from tests.conftest import _real_data_dir

APP = Path(__file__).resolve().parents[1] / "app.py"
MEASUREMENT = APP.parent / "benchmarks" / "lesson_defaults.json"
TIMEOUT = 240
# each step's link: the page it opens and the query parameters it must carry (beside model and image)
STEP_LINKS = {
    1: (nav.MODEL_IMAGE, {}),
    2: (nav.ATTACK, {"preset": "reachable", "seed": "0"}),
    3: (nav.NOISE, {"sigmas": "0.0,0.25", "seed": "0"}),
    4: (nav.NOISE, {"votes_sigma": "0.25", "draws": "200", "votes_seed": "0", "votes_batch": "100"}),
    5: (nav.CERTIFY, {"methods": "randsmooth", "sigma": "0.25", "n0": "100", "n": "500", "alpha": "0.001"}),
    6: (nav.CERTIFY, {"methods": "dsmooth,randsmooth,lsmooth", "sigma": "0.25", "n": "500", "seed": "0"}),
    7: (nav.CERTIFY, {"methods": "dsmooth,randsmooth,lsmooth", "batch": "100"}),
    8: (nav.CERTIFY, {"methods": "dsmooth,randsmooth,lsmooth", "n0": "100"}),
}


def new_app() -> AppTest:
    return AppTest.from_file(str(APP), default_timeout=TIMEOUT)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def show_step(at: AppTest, number: int) -> None:
    at.radio(key=lesson.STEP).set_value(number).run()
    assert_clean(at)
    assert at.subheader[0].value.startswith(f"{number}. "), [s.value for s in at.subheader]


def step_link(at: AppTest) -> tuple[str, dict[str, str]]:
    """The step's one link to a full page: the page's URL path and its query parameters."""
    found = at.get("page_link")
    assert len(found) == 1, [p.proto.page for p in found]
    return found[0].proto.page, dict(parse_qsl(found[0].proto.query_string))


def chart_keys(at: AppTest) -> list[str]:
    return [element.proto.id for element in at.get("plotly_chart")]


def image_of(at: AppTest) -> state.ImageChoice:
    return at.session_state[state.IMAGE]


# ---------------------------------------------------------------- the default page and its image
def test_the_lesson_opens_first_with_its_measured_image(app_env: Path) -> None:
    assert nav.PAGES[0].path == lesson.PAGE and nav.PAGES[0].title == "Start here"
    at = new_app().run()
    assert_clean(at)
    assert at.title[0].value == "Start here: a guided lesson"
    in_data = len(load_cifar10("test", app_env, download=False).labels) > lesson_defaults.CIFAR_INDEX
    # the tests' tiny fake CIFAR-10 (no real data here) is too short for the pick: the gallery's pick then
    expected = f"cifar10-test:{lesson_defaults.CIFAR_INDEX}" if in_data else f"gallery:{lesson_defaults.GALLERY_FILE}"
    assert image_of(at).image_id == expected
    assert at.radio(key=lesson.STEP).value == 1
    at.button(key="lesson_next").click().run()
    assert_clean(at)
    assert at.radio(key=lesson.STEP).value == 2 and at.subheader[0].value == "2. An attack that fools it"


def test_offline_the_lesson_uses_the_measured_gallery_sample(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(tmp_path))  # no CIFAR-10 here
    at = new_app().run()
    assert_clean(at)
    assert image_of(at).image_id == f"gallery:{lesson_defaults.GALLERY_FILE}"
    assert lesson_defaults.GALLERY_FILE in {s.file for s in gallery.samples()}


def test_a_shared_lesson_link_opens_its_step_and_settings(app_env: Path) -> None:
    at = new_app()
    at.query_params = {"image": "gallery:cat_chelsea.png", "step": "3", "sigma": "0.5", "n": "9"}
    at.run()
    assert_clean(at)
    assert image_of(at).image_id == "gallery:cat_chelsea.png"  # the link's image, not the lesson's default
    assert at.radio(key=lesson.STEP).value == 3
    assert at.session_state["lesson_sigma"] == 0.5
    notes = [w.value for w in at.warning if "n = '9' was ignored" in w.value]
    assert len(notes) == 1, [w.value for w in at.warning]  # said once
    show_step(at, 4)  # the address bar follows: the lesson's own link holds its step and settings
    assert {"step": "4", "sigma": "0.5", "image": "gallery:cat_chelsea.png"}.items() <= at.query_params.items()


def test_an_image_chosen_before_the_lesson_stays(app_env: Path) -> None:
    at = new_app().switch_page(nav.MODEL_IMAGE).run()
    at.radio(key="image_source").set_value("Sample gallery (offline)").run()
    at.button(key="sample_1").click().run()  # Chelsea the cat
    at.switch_page(lesson.PAGE).run()
    assert_clean(at)
    assert image_of(at).image_id == "gallery:cat_chelsea.png"


# ---------------------------------------------------------------- every step, its widget and its link
def test_every_step_renders_and_links_to_its_full_page_with_the_state(app_env: Path) -> None:
    at = new_app().run()
    image_id = image_of(at).image_id
    for number, (page, expected) in STEP_LINKS.items():
        show_step(at, number)
        path, query = step_link(at)
        assert path == links.url_path(page), (number, path)
        assert query["image"] == image_id and query["model"] == DEFAULT_MODEL
        assert expected.items() <= query.items(), (number, query)


def test_step_widgets_change_the_image_the_noise_and_the_links(app_env: Path) -> None:
    at = new_app().run()
    show_step(at, 1)
    mistake = next(o for o in at.selectbox(key="lesson_image").options if "Chelsea" in o)
    at.selectbox(key="lesson_image").set_value(mistake).run()
    assert_clean(at)
    assert image_of(at).image_id == "gallery:cat_chelsea.png"
    assert "lesson_probabilities" in " ".join(chart_keys(at))
    assert step_link(at)[1]["image"] == "gallery:cat_chelsea.png"

    show_step(at, 3)
    at.select_slider(key="lesson_sigma").set_value(0.5).run()
    assert_clean(at)
    assert "sigma = 0.5" in at.get("plotly_chart")[0].proto.spec
    assert step_link(at)[1]["sigmas"] == "0.0,0.5"

    show_step(at, 5)  # the noise level chosen in step 3 carries on
    at.select_slider(key="lesson_n").set_value(1000).run()
    assert_clean(at)
    assert {"sigma": "0.5", "n": "1000"}.items() <= step_link(at)[1].items()


def test_a_step_link_opens_the_full_page_with_the_same_settings(app_env: Path) -> None:
    at = new_app().run()
    show_step(at, 6)
    _, query = step_link(at)
    opened = new_app()
    opened.query_params = query
    opened.switch_page(nav.CERTIFY).run()
    assert_clean(opened)
    assert image_of(opened).image_id == image_of(at).image_id
    assert opened.session_state["cert_methods"] == ["DSmooth", "RandSmooth", "LSmooth"]
    s = lesson_defaults.SETTINGS
    for key, value in {
        "sigma": s.sigma,
        "n0": s.n0,
        "n": s.n,
        "alpha": s.alpha,
        "batch": s.batch,
        "seed": s.seed,
    }.items():
        assert opened.session_state[f"cert_{key}"] == value


# ---------------------------------------------------------------- the steps' jobs give the library's numbers
@pytest.mark.slow
def test_the_steps_jobs_give_the_librarys_numbers(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(tmp_path))  # the gallery sample: the same image everywhere
    at = new_app().run()
    show_step(at, 2)
    apptest_jobs.click_and_finish(at, "lesson_attack_run")
    assert_clean(at)
    assert at.session_state[state.ATTACK].result.success[0]  # the measured default is fooled
    show_step(at, 4)
    apptest_jobs.click_and_finish(at, "lesson_votes_run")
    assert "lesson_votes_histogram" in " ".join(chart_keys(at))
    show_step(at, 6)
    apptest_jobs.click_and_finish(at, "lesson_certify_all")
    assert_clean(at)
    record: state.CertifyRecord = at.session_state[state.CERTIFY]
    expected, _ = library_certificates(lesson_defaults.GALLERY_FILE)
    assert {noise.key: (c.prediction, c.radius) for noise, c in record.results} == {
        key: (c.prediction, c.radius) for key, c in expected.items()
    }
    assert "lesson_guarantees" in " ".join(chart_keys(at))
    show_step(at, 7)
    assert "lesson_region_slice" in " ".join(chart_keys(at))
    verdict = next(m.value for m in at.markdown if m.value.startswith("The picture cuts image space"))
    for noise, _ in record.results:  # each method's region, with the attack inside or outside it
        assert re.search(rf"{noise.name}: the attack is [0-9.e-]+ away in .* R = [0-9.e-]+, (in|out)side", verdict)
    show_step(at, 8)
    apptest_jobs.click_and_finish(at, "lesson_audit_run")
    assert_clean(at)
    assert "lesson_audit_chart" in " ".join(chart_keys(at))
    assert at.session_state[state.AUDIT]  # the Certify page shows the same audit


# ---------------------------------------------------------------- the measured defaults make the methods differ
def library_certificates(gallery_file: str | None = None, cifar_index: int | None = None) -> tuple[dict, bool]:
    """The three certificates of a lesson image with the lesson's settings, by the library alone, and
    whether the lesson's attack fools the base model (on its own prediction, as the lesson attacks an
    unlabelled sample; the CIFAR-10 default is predicted right, so its label is the same)."""
    model = load_experiment_model(DEFAULT_MODEL, "cpu")
    if gallery_file is not None:
        pixels = gallery.pixels(gallery_file)
    else:
        pixels = load_cifar10("test", _real_data_dir(), download=False).images[cifar_index]
    x = prepare_image(Image.fromarray(pixels), model.info)
    profile = ThreatProfile.load(lesson_defaults.PROFILE_FILE)
    covariance = ProfileShape.of(profile.covariance).apply(profile.covariance)
    s = lesson_defaults.SETTINGS
    out = {}
    for method in METHODS:
        noise = make_noise(method, s.sigma, covariance)
        out[method] = certify(model, x, noise, s.n0, s.n, s.alpha, s.batch, generator_for(model, s.seed))
    fooled = bool(
        square_then_fgsm(
            model,
            x.unsqueeze(0),
            torch.tensor([int(model(x.unsqueeze(0)).argmax())]),
            PRESETS[s.attack_preset],
            generator=generator_for(model, s.attack_seed),
        ).success[0]
    )
    return out, fooled


def assert_methods_differ(found: dict, fooled: bool) -> None:
    """benchmarks/lesson_defaults.py's rule: no radius at its ceiling, each pair 3 % of the ceilings apart."""
    assert fooled, "the attack does not fool the base model"
    shares = [c.radius / c.radius_ceiling for c in found.values()]
    assert all(not c.abstained for c in found.values())
    assert len({c.prediction for c in found.values()}) == 1  # one certified class, three different radii
    assert max(shares) < 0.999, "a method certifies at its ceiling"
    gaps = [abs(a - b) for i, a in enumerate(shares) for b in shares[i + 1 :]]
    assert min(gaps) >= 0.03, shares


def test_the_defaults_are_the_picks_of_the_committed_measurement() -> None:
    record = json.loads(MEASUREMENT.read_text())
    assert record["picks"] == {
        "gallery": f"gallery:{lesson_defaults.GALLERY_FILE}",
        "cifar10-test": f"cifar10-test:{lesson_defaults.CIFAR_INDEX}",
    }
    assert record["mistake"] == f"cifar10-test:{lesson_defaults.CIFAR_MISTAKE}"
    assert record["settings"] == lesson_defaults.SETTINGS._asdict()


def test_the_offline_default_makes_the_methods_differ() -> None:
    assert_methods_differ(*library_certificates(gallery_file=lesson_defaults.GALLERY_FILE))


def test_the_cifar_default_makes_the_methods_differ() -> None:
    if _real_data_dir() is None:
        pytest.skip("needs the real CIFAR-10 test set (DSMOOTH_DATA_DIR)")
    found, fooled = library_certificates(cifar_index=lesson_defaults.CIFAR_INDEX)
    label = int(load_cifar10("test", _real_data_dir(), download=False).labels[lesson_defaults.CIFAR_INDEX])
    assert all(c.prediction == label for c in found.values())  # the true class, certified by all three
    assert_methods_differ(found, fooled)
