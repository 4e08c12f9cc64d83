"""Every page of the Streamlit app under streamlit.testing.v1.AppTest, main actions with small settings.

The tests run the real app (app.py with st.navigation) in-process on CIFAR-10 from DSMOOTH_DATA_DIR,
or on a tiny fake copy when the data is absent (see conftest.py).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from streamlit.testing.v1 import AppTest

from dsmooth_core import IsotropicGaussian, radius_ceiling
from dsmooth_core.attacks import AttackConfig
from dsmooth_core.data import load_cifar10
from dsmooth_core.models import DEFAULT_MODEL, load_model
from dsmooth_core.models.errors import ModelUnavailableError
from dsmooth_core.profiles import Calibration, ThreatProfile, Tuning, calibrate
from dsmooth_core.settings import ProfileShape
from dsmooth_core.tuning import TuningGrid
from dsmooth_lab_ui import nav, resources, scheduler, state
from tests import apptest_jobs

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT = 240
ALL_PAGES = [path for path, _, _ in nav.PAGES]


# ---------------------------------------------------------------- helpers
def new_app(**session: object) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).switch_page(nav.MODEL_IMAGE)  # the lesson opens first
    for key, value in session.items():
        at.session_state[key] = value
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def button(at: AppTest, label: str):
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return matches[0]


def image_uploader(at: AppTest):
    """The image upload widget (the Model & image page also has one for model files)."""
    return next(u for u in at.file_uploader if u.key == "upload_file")


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly charts on the page by their key (the element id ends with the user key), as figure JSON."""
    out = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        out[element.proto.id] = spec
    return out


def chart(at: AppTest, key: str) -> dict:
    found = [spec for element_id, spec in charts(at).items() if element_id.endswith(key) or key in element_id]
    assert found, f"no chart {key!r}; charts: {list(charts(at))}"
    return found[0]


def finish_job(at: AppTest, timeout: float = TIMEOUT) -> scheduler.Job | None:
    """Run the app, wait for the session's background job to end, and run again (delivers its result)."""
    return apptest_jobs.finish_job(at, timeout)


def panel_note(at: AppTest) -> str:
    """The job panel's line about the last job (a caption once it is done)."""
    return "\n".join(c.value for c in at.caption if "done in" in c.value)


def trace_names(spec: dict) -> list[str]:
    return [trace.get("name", "") for trace in spec["data"]]


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.info] + [e.value for e in at.warning] + [e.value for e in at.error]
    parts += [e.value for e in at.success]
    return "\n".join(str(p) for p in parts)


@pytest.fixture(scope="module")
def app_profile(app_data_dir: Path) -> state.ProfileChoice:
    """A small threat profile for the bundled model, built directly with the library (train split)."""
    model = load_model(DEFAULT_MODEL)
    train = load_cifar10("train", app_data_dir, download=False)
    config = AttackConfig(eps_inf=8 / 255, n_queries=10, fgsm="l2", eps_fgsm=0.5, project_linf=False)
    profile = calibrate(model, train, Calibration(size=12, attack=config, k=4, keep="nonzero"))
    return state.ProfileChoice(profile, "test profile", ProfileShape("det", profile.covariance.k, 0.0))


@pytest.fixture
def app_with_profile(app_env: Path, app_profile: state.ProfileChoice) -> AppTest:
    at = new_app(**{state.PROFILE: app_profile, state.PROFILE_DEFAULT_TRIED: True})
    at.run()
    assert_clean(at)
    return at


# ---------------------------------------------------------------- navigation, sidebar, defaults
def test_every_page_file_is_declared_once_and_every_declared_page_exists() -> None:
    root = APP.parent
    declared = [page.path for page in nav.PAGES]
    on_disk = sorted(path.relative_to(root).as_posix() for path in (root / "pages").glob("*.py"))
    assert sorted(declared) == on_disk  # no page file left out, none declared twice, none missing
    titles = [page.title for page in nav.PAGES]
    assert len(set(titles)) == len(titles), titles


def test_each_declared_page_loads(app_env: Path) -> None:
    at = new_app().run()
    assert_clean(at)
    assert at.title[0].value == "Model & image"
    sidebar = "\n".join(m.value for m in at.sidebar.get("markdown"))
    assert "**Device**" in sidebar and "bundled-resnet20" in sidebar and "CIFAR-10 test #" in sidebar
    assert isinstance(at.session_state[state.IMAGE], state.ImageChoice)
    for page in ALL_PAGES:
        at.switch_page(page).run()
        assert_clean(at)
        assert at.title, page


def test_pages_without_an_image_say_what_to_do_and_link_there(app_env: Path) -> None:
    at = new_app(**{state.IMAGE: None, "dsl_image_default_tried": True})
    at.run()
    for page in (nav.ATTACK, nav.NOISE, nav.CERTIFY):
        at.switch_page(page).run()
        assert_clean(at)
        assert "Choose an image first" in texts(at)
        assert at.get("page_link"), page


# ---------------------------------------------------------------- page 1: model and image
def test_model_page_shows_prediction_chart_and_gallery(app_env: Path) -> None:
    at = new_app().run()
    assert_clean(at)
    spec = chart(at, "probability_chart")
    assert spec["data"][0]["type"] == "bar"
    assert any(m.label == "Predicted class" for m in at.metric)
    picks = [b for b in at.button if b.key and b.key.startswith("pick_")]
    assert len(picks) >= 8
    target = picks[3]
    target.click()
    at.run()
    assert_clean(at)
    assert at.session_state[state.IMAGE].image_id == f"cifar10-test:{target.key.removeprefix('pick_')}"


def test_gallery_class_filter_and_index_jump(app_env: Path) -> None:
    at = new_app().run()
    at.number_input(key="gallery_page").set_value(5).run()
    at.selectbox(key="gallery_class").set_value("cat").run()
    assert_clean(at)
    picks = [b for b in at.button if b.key and b.key.startswith("pick_")]
    picks[0].click()
    at.run()
    image = at.session_state[state.IMAGE]
    assert image.label_name == "cat" and image.label == 3
    at.number_input(key="gallery_jump").set_value(7).run()
    button(at, "Use it").click()
    at.run()
    assert_clean(at)
    assert at.session_state[state.IMAGE].image_id == "cifar10-test:7"


def test_bad_upload_shows_an_error_and_keeps_the_image(app_env: Path) -> None:
    at = new_app().run()
    before = at.session_state[state.IMAGE].image_id
    at.radio(key="image_source").set_value("Upload").run()
    image_uploader(at).upload("broken.png", b"\x89PNG\r\n\x1a\n this is not an image", "image/png")
    at.run()
    assert_clean(at)
    assert any("broken.png" in e.value for e in at.error)
    assert at.session_state[state.IMAGE].image_id == before


def test_good_upload_becomes_the_image(app_env: Path) -> None:
    at = new_app().run()
    at.radio(key="image_source").set_value("Upload").run()
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (200, 30, 30)).save(buffer, format="PNG")
    image_uploader(at).upload("red.png", buffer.getvalue(), "image/png")
    at.run()
    assert_clean(at)
    image = at.session_state[state.IMAGE]
    assert image.source == "upload" and image.pixels.shape == (40, 48, 3)
    assert "red.png" in "\n".join(m.value for m in at.sidebar.get("markdown"))


def test_model_that_cannot_load_shows_the_library_message_and_keeps_the_model(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = resources.load_experiment_model

    def offline(name, device="cpu", pretrained=True):
        if name != DEFAULT_MODEL:
            raise ModelUnavailableError(f"Could not download the weights of {name} (offline test)")
        return original(name, device, pretrained=pretrained)

    monkeypatch.setattr(resources, "load_experiment_model", offline)
    at = new_app().run()
    at.selectbox(key="model_select").set_value("cifar10_resnet32").run()
    assert_clean(at)
    assert any("offline test" in e.value for e in at.error)
    assert at.session_state[state.MODEL].name == DEFAULT_MODEL
    assert at.selectbox(key="model_select").value == DEFAULT_MODEL


# ---------------------------------------------------------------- page 2: attack
def test_attack_runs_shows_images_norms_and_survives_page_switches(app_env: Path) -> None:
    at = new_app().run()
    at.switch_page(nav.ATTACK).run()
    assert_clean(at)
    at.number_input(key="atk_n_queries").set_value(20)
    button(at, "Run the attack").click()
    finish_job(at)
    assert_clean(at)
    record = at.session_state[state.ATTACK]
    assert isinstance(record, state.AttackRecord)
    assert panel_note(at).startswith("The attack: done in")
    assert int(record.result.queries[0]) <= 21 and float(record.result.linf[0]) <= 8 / 255 + 1e-6
    spec = chart(at, "attack_images")
    assert [t["type"] for t in spec["data"]] == ["image"] * 3
    labels = {m.label for m in at.metric}
    assert {"Prediction before", "Prediction after", "Queries used"} <= labels
    assert {"l_inf norm of delta", "l2 norm of delta", "l1 norm of delta"} <= labels
    at.switch_page(nav.ABOUT).run()
    at.switch_page(nav.ATTACK).run()
    assert_clean(at)
    assert at.session_state[state.ATTACK] is record
    assert chart(at, "attack_images")
    assert at.number_input(key="atk_n_queries").value == 20  # settings persist across pages


def test_attack_preset_fills_every_parameter_and_bad_values_are_refused(app_env: Path) -> None:
    at = new_app().run()
    at.switch_page(nav.ATTACK).run()
    at.selectbox(key="atk_preset").set_value("paper").run()
    assert at.number_input(key="atk_eps_inf").value == pytest.approx(0.5)
    assert at.number_input(key="atk_n_queries").value == 5000
    at.number_input(key="atk_p_init").set_value(1.5).run()
    assert_clean(at)
    assert any("p_init" in e.value for e in at.error)
    assert button(at, "Run the attack").disabled
    assert at.selectbox(key="atk_preset").value == "custom"


def test_a_structured_preset_attacks_only_its_window(app_env: Path) -> None:
    """The patch preset's support has no widget: it follows the preset, survives an edit of another
    field (custom), and the app's attack moves only the 8 x 8 corner."""
    at = new_app().run()
    at.switch_page(nav.ATTACK).run()
    at.selectbox(key="atk_preset").set_value("patch").run()
    assert any("8 x 8 window" in c.value for c in at.caption)
    at.number_input(key="atk_n_queries").set_value(20).run()
    assert at.selectbox(key="atk_preset").value == "custom"
    button(at, "Run the attack").click()
    finish_job(at)
    assert_clean(at)
    delta = at.session_state[state.ATTACK].result.perturbation[0]
    outside = torch.ones_like(delta, dtype=torch.bool)
    outside[:, -8:, -8:] = False
    assert delta[outside].abs().max() == 0 and delta.abs().max() > 0
    assert float(delta.abs().max()) <= 16 / 255 + 1e-6


# ---------------------------------------------------------------- page 3: threat profile
@pytest.mark.filterwarnings("ignore:requested rank", "ignore:the residual variance")
def test_profile_page_builds_with_progress_and_rank_shrinkage_controls(app_env: Path) -> None:
    at = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    at.switch_page(nav.PROFILE).run()
    assert_clean(at)
    at.radio(key="profile_source").set_value("Build from calibration images").run()
    at.number_input(key="prof_n").set_value(10)
    at.number_input(key="prof_n_queries").set_value(10)
    at.number_input(key="prof_k").set_value(50)  # more than 10 perturbations allow: clamped
    at.selectbox(key="prof_keep").set_value("nonzero")
    at.run()
    button(at, "Build the profile").click()
    finish_job(at)
    assert_clean(at)
    choice = at.session_state[state.PROFILE]
    assert choice is not None and choice.source.startswith("built here")
    assert "done in" in panel_note(at)
    assert choice.profile.split == "train" and len(choice.profile.indices) == 10
    assert choice.profile.covariance.k <= 9
    assert any("Rank k = 50 was asked for" in w.value for w in at.warning)
    for key in ("profile_spectrum", "profile_explained", "profile_eigen"):
        assert chart(at, key)
    mu_before = next(m.value for m in at.metric if m.label.startswith("mu_min"))
    at.slider(key="profile_shrinkage").set_value(1.0).run()
    assert_clean(at)
    assert at.session_state[state.PROFILE].shrinkage == 1.0
    assert "**In use:**" in texts(at) and "shrinkage = 1" in texts(at)  # the line the sliders change, redrawn
    sidebar_profile = next(m.value for m in at.sidebar.markdown if m.value.startswith("**Threat profile**"))
    assert "shrinkage = 1," in sidebar_profile  # in a browser only its fragment reruns: test_browser checks that
    assert float(next(m.value for m in at.metric if m.label.startswith("Axis ratio"))) == pytest.approx(1.0)
    assert mu_before != next(m.value for m in at.metric if m.label.startswith("mu_min"))
    at.slider(key="profile_shrinkage").set_value(0.0)
    at.slider(key="profile_k").set_value(2).run()
    assert_clean(at)
    assert at.session_state[state.PROFILE].covariance.k == 2
    assert "volume of the l2 ball" in texts(at)
    det_mu = float(next(m.value for m in at.metric if m.label.startswith("mu_min")))
    at.radio(key="profile_normalization").set_value("trace").run()
    assert_clean(at)
    in_use = at.session_state[state.PROFILE].covariance
    assert in_use.normalization == "trace" and in_use.k == 2
    assert float(next(m.value for m in at.metric if m.label.startswith("mu_min"))) == pytest.approx(
        in_use.mu_min, rel=1e-3
    )
    assert in_use.mu_min < det_mu  # by AM-GM the trace scale is the larger one
    assert "Noise energy" in texts(at) and "trace-normalized" in at.session_state[state.PROFILE].describe()
    at.run()  # the controls rerun only their fragments; a full run draws the rest of the page
    assert at.get("download_button")
    assert "k = 2, shrinkage = 0," in next(m.value for m in at.sidebar.markdown if m.value.startswith("**Threat"))


def test_profile_file_that_is_not_a_profile_is_refused(app_env: Path) -> None:
    at = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    at.switch_page(nav.PROFILE).run()
    at.radio(key="profile_source").set_value("Load a profile file").run()
    at.file_uploader[0].upload("junk.pt", b"definitely not a torch file")
    at.run()
    assert_clean(at)
    assert any("junk.pt" in e.value for e in at.error)
    assert at.session_state[state.PROFILE] is None


# ---------------------------------------------------------------- page 4: noise explorer
def test_noise_explorer_draws_three_methods_and_counts_votes(app_with_profile: AppTest) -> None:
    at = app_with_profile
    at.switch_page(nav.NOISE).run()
    assert_clean(at)
    noisy = chart(at, "noise_noisy_grid")
    images = [t for t in noisy["data"] if t["type"] == "image"]
    assert len(images) == 3 * 4  # three methods x sigma in {0, 0.1, 0.5, 1}
    assert "clipped to [0, 1] for display only" in texts(at)
    at.number_input(key="votes_count").set_value(20).run()
    button(at, "Count the votes").click()
    finish_job(at)
    assert_clean(at)
    assert "done in" in panel_note(at)
    results = at.session_state[state.NOISE_VOTES]["results"]
    assert set(results) == {"RandSmooth", "LSmooth", "DSmooth"}
    assert all(int(r["counts"].sum()) == 20 for r in results.values())
    assert set(trace_names(chart(at, "votes_histogram"))) == {"RandSmooth", "LSmooth", "DSmooth"}
    assert [t["type"] for t in chart(at, "votes_variance")["data"]] == ["heatmap"] * 3


# ---------------------------------------------------------------- page 5: certify
def _certify(at: AppTest, n0: int = 10, n: int = 50) -> None:
    at.number_input(key="cert_n0").set_value(n0)
    at.number_input(key="cert_n").set_value(n)
    at.run()
    button(at, "Certify").click()
    finish_job(at)
    assert_clean(at)


def test_certify_three_methods_compares_honestly_and_caches(app_with_profile: AppTest) -> None:
    at = app_with_profile
    at.switch_page(nav.ATTACK).run()
    at.number_input(key="atk_n_queries").set_value(20)
    button(at, "Run the attack").click()
    finish_job(at)
    at.switch_page(nav.CERTIFY).run()
    assert_clean(at)
    assert at.multiselect(key="cert_methods").value == ["DSmooth", "RandSmooth", "LSmooth"]
    _certify(at)
    record = at.session_state[state.CERTIFY]
    certificates = {noise.name: cert for noise, cert in record.results}
    assert set(certificates) == {"DSmooth", "RandSmooth", "LSmooth"}
    assert panel_note(at).startswith("Certification: done in")
    metrics = {m: cert.metric for m, cert in certificates.items()}
    assert metrics == {"DSmooth": "mahalanobis", "RandSmooth": "l2", "LSmooth": "l1"}
    table = at.dataframe[0].value
    assert list(table["method"]) == ["DSmooth", "RandSmooth", "LSmooth"]
    assert list(table["radius metric"]) == ["Mahalanobis (St)", "l2", "l1"]
    assert (table["n"] == 50).all()
    comparison = at.dataframe[1].value
    for column in (
        "l2 radius in every direction",
        "l1 radius",
        "attack inside region",
        "certified against the attack",
    ):
        assert column in comparison.columns
    slice_spec = chart(at, "cert_slice")
    names = trace_names(slice_spec)
    assert "x + attack perturbation" in names
    for method in ("DSmooth", "RandSmooth", "LSmooth"):
        assert any(name.startswith(method) for name in names)
    for method, metric in (("DSmooth", "Mahalanobis (St)"), ("RandSmooth", "l2"), ("LSmooth", "l1")):
        certified = not certificates[method].abstained
        expected = f"{method}: {metric} ball" if certified else f"{method}: abstained (no region)"
        assert any(name.startswith(expected) for name in names), (expected, names)
    assert chart(at, "cert_bars")
    assert at.get("download_button")
    # same inputs => the cached certificates come back (same recorded timings, no new run)
    seconds = {noise.name: cert.seconds for noise, cert in record.results}
    button(at, "Certify").click()
    finish_job(at)
    assert_clean(at)
    again = at.session_state[state.CERTIFY]
    assert again is not record
    assert {noise.name: cert.seconds for noise, cert in again.results} == seconds
    # results survive a page switch
    at.switch_page(nav.MODEL_IMAGE).run()
    at.switch_page(nav.CERTIFY).run()
    assert_clean(at)
    assert at.session_state[state.CERTIFY] is again and len(at.dataframe) == 2


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("cert_sigma", 0.0, "sigma must be a positive number"),
        ("cert_sigma", -0.5, "sigma must be a positive number"),
        ("cert_alpha", 1.5, "alpha must lie strictly between 0 and 1"),
        ("cert_alpha", 0.0, "alpha must lie strictly between 0 and 1"),
        ("cert_n0", 500, "n0 (500) is larger than n"),
    ],
)
def test_certify_refuses_bad_inputs_and_keeps_results(app_env: Path, key: str, value: float, message: str) -> None:
    at = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    at.switch_page(nav.CERTIFY).run()
    at.multiselect(key="cert_methods").set_value(["RandSmooth"])
    _certify(at, n0=5, n=20)
    first = at.session_state[state.CERTIFY]
    at.number_input(key=key).set_value(value)
    if key == "cert_n0":
        at.number_input(key="cert_n").set_value(100)
    at.run()
    assert_clean(at)
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert button(at, "Certify").disabled
    assert at.session_state[state.CERTIFY] is first and len(at.dataframe) >= 1


def test_certify_without_profile_offers_the_other_methods_and_a_link(app_env: Path) -> None:
    at = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    at.switch_page(nav.CERTIFY).run()
    assert_clean(at)
    assert at.multiselect(key="cert_methods").value == ["RandSmooth", "LSmooth"]
    assert "DSmooth is unavailable" in texts(at)
    links = [(link.proto.label, link.proto.page) for link in at.get("page_link")]
    assert any("threat profile" in label.lower() and "threat_profile" in page for label, page in links), links


def test_about_page_states_the_theorems(app_env: Path) -> None:
    at = new_app().run()
    at.switch_page(nav.ABOUT).run()
    assert_clean(at)
    formulas = " ".join(latex.value for latex in at.latex)
    assert r"\Phi^{-1}" in formulas and r"\ln" in formulas and "S_t" in formulas and r"\rho^2" in formulas
    assert r"\text{certified}" in formulas and not any(c in formulas for c in "\t\b\f\v")  # no eaten backslashes
    assert re.search("ABSTAIN", texts(at))
    assert "never proves" in texts(at) and "refutes" in texts(at)
    for n in (10**3, 10**5):  # the ceilings come from the library's own function
        assert f"{radius_ceiling(IsotropicGaussian(1.0), n, 1e-3):.2f}" + r"\,\sigma" in formulas


def _about_text(at: AppTest) -> str:
    at.switch_page(nav.ABOUT).run()
    assert_clean(at)
    return texts(at)


def test_about_page_shows_the_bundled_profiles_numbers_read_from_their_files(app_env: Path) -> None:
    tuned = ThreatProfile.load(resources.BUNDLED_PROFILE)
    paper = ThreatProfile.load(resources.BUNDLED_PAPER_PROFILE)
    record, cov = tuned.tuning, tuned.covariance
    choice = record["choice"]
    paper_row = next(
        row
        for row in record["table"]
        if (row["normalization"], row["k"], row["shrinkage"])
        == (paper.covariance.normalization, paper.covariance.k, paper.covariance.shrinkage)
    )
    text = _about_text(new_app().run())
    for expected in (
        f"eps_inf = {round(tuned.attack['eps_inf'] * 255)}/255",
        f"on {len(record['fitting_indices'])} training images",
        f"chosen on {len(record['tuning_indices'])} more at sigma = {record['sigma']:g}",
        f"**{cov.normalization}** normalization, **k = {cov.k}**, **shrinkage {cov.shrinkage:g}**",
        f"(axis ratio {choice['axis_ratio']:.3g})",
        f"It certified {choice['certified']} of those {choice['images']} held-out images",
        f"{paper.covariance.normalization} normalization, k = {paper.covariance.k}, no shrinkage",
        f"fitted on all {len(paper.indices)} of those images",
        f"sqrt(mu_max) = {math.sqrt(paper.covariance.mu_max):.3g} times",
        f"certified {paper_row['certified']} and abstained on {paper_row['abstained']} of the 100 held-out",
    ):
        assert expected in text, expected


def test_about_page_follows_a_rebuilt_profile_file(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another record in the file, other numbers on the page: nothing on it is typed by hand."""
    tuned = ThreatProfile.load(resources.BUNDLED_PROFILE)
    record = copy.deepcopy(tuned.tuning)
    record["sigma"] = 0.5
    record["fitting_indices"] = record["fitting_indices"][:321]
    record["choice"]["certified"] = 57
    for row in record["table"]:
        if (row["normalization"], row["k"], row["shrinkage"]) == ("det", 100, 0.0):
            row["certified"], row["abstained"] = 3, 96
    rebuilt = tmp_path / "rebuilt_profile.pt"
    dataclasses.replace(tuned, tuning=record).save(rebuilt)
    monkeypatch.setattr(resources, "BUNDLED_PROFILE", rebuilt)
    text = _about_text(new_app().run())
    assert "`rebuilt_profile.pt`" in text and "on 321 training images" in text and "at sigma = 0.5" in text
    assert "It certified 57 of those 100 held-out images" in text
    assert "certified 3 and abstained on 96 of the 100 held-out ones" in text
    assert "fitted on the 321 images" in text
    assert "on 400 training images" not in text and "certified 82" not in text


def test_about_page_says_when_a_bundled_profile_cannot_be_read(
    app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    junk = tmp_path / "paper_profile.pt"
    junk.write_bytes(b"not a profile")
    monkeypatch.setattr(resources, "BUNDLED_PAPER_PROFILE", junk)
    text = _about_text(new_app().run())
    assert "The bundled profile paper_profile.pt could not be read" in text
    assert "**Tuned (the default)**" in text and "**The paper's setting**" not in text


def test_profile_page_shows_a_tuned_profile_with_its_table_and_choice(
    app_env: Path, app_data_dir: Path, tmp_path: Path
) -> None:
    model = load_model(DEFAULT_MODEL)
    train = load_cifar10("train", app_data_dir, download=False)
    config = AttackConfig(eps_inf=8 / 255, n_queries=10, fgsm="l2", eps_fgsm=0.5, project_linf=False)
    grid = TuningGrid(normalizations=("det", "trace"), ranks=(4, 2), shrinkages=(0.0, 0.5), min_axis_ratio=1.0)
    tuning = Tuning(sigma=0.25, share=0.25, grid=grid, n0=10, n=20, seed=2)
    profile = calibrate(model, train, Calibration(size=12, attack=config, k=4, keep="nonzero", tuning=tuning))
    profile.save(tmp_path / "tuned.pt")
    at = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    at.switch_page(nav.PROFILE).run()
    at.radio(key="profile_source").set_value("Load a profile file").run()
    at.file_uploader[0].upload("tuned.pt", (tmp_path / "tuned.pt").read_bytes())
    at.run()
    assert_clean(at)
    choice = profile.tuning["choice"]
    in_use = at.session_state[state.PROFILE].covariance
    knobs = (choice["normalization"], choice["k"], choice["shrinkage"])
    assert (in_use.normalization, in_use.k, in_use.shrinkage) == knobs
    assert "**Tuned** at sigma 0.25 on 3 held-out calibration images" in texts(at)
    table = at.dataframe[0].value
    assert len(table) == 8 and int(table["chosen"].sum()) == 1


def test_bundled_profiles_default_tuned_and_paper_setting_one_click_away(app_env: Path) -> None:
    at = new_app().run()
    assert_clean(at)
    default = at.session_state[state.PROFILE]
    assert default.source == "bundled profile (tuned)" and default.profile.tuning is not None
    choice = default.profile.tuning["choice"]
    assert (default.normalization, default.k, default.shrinkage) == (
        choice["normalization"],
        choice["k"],
        choice["shrinkage"],
    )
    at.switch_page(nav.PROFILE).run()
    button(at, "Use the paper's setting (det, k = 100)").click().run()
    assert_clean(at)
    paper = at.session_state[state.PROFILE]
    assert paper.source == "bundled profile (paper's setting)"
    assert (paper.normalization, paper.covariance.k, paper.shrinkage) == ("det", 100, 0.0)
    button(at, "Use the tuned profile (default)").click().run()
    assert at.session_state[state.PROFILE].source == "bundled profile (tuned)"


def test_profile_page_builds_a_tuned_profile_on_held_out_images(app_env: Path) -> None:
    at = new_app(**{state.PROFILE_DEFAULT_TRIED: True}).run()
    at.switch_page(nav.PROFILE).run()
    at.radio(key="profile_source").set_value("Build from calibration images").run()
    at.number_input(key="prof_n").set_value(12)
    at.number_input(key="prof_n_queries").set_value(10)
    at.number_input(key="prof_k").set_value(4)
    at.selectbox(key="prof_keep").set_value("nonzero")
    at.checkbox(key="prof_tune").check().run()
    at.slider(key="prof_tune_share").set_value(0.25)
    at.number_input(key="prof_tune_n").set_value(20).run()
    assert "under up to 16 settings" in texts(at)  # det/trace x k 4, 1 x three shrinkages and the floor's
    button(at, "Build the profile").click()
    finish_job(at)
    assert_clean(at)
    choice = at.session_state[state.PROFILE]
    tuning = choice.profile.tuning
    assert choice.source.endswith("kept, tuned)") and tuning is not None
    assert not set(tuning["tuning_indices"]) & set(tuning["fitting_indices"])
    assert len(tuning["tuning_indices"]) == 3 and 12 <= len(tuning["table"]) <= 16
    knobs = (tuning["choice"]["normalization"], tuning["choice"]["k"], tuning["choice"]["shrinkage"])
    assert (choice.normalization, choice.k, choice.shrinkage) == knobs
    assert "**Tuned** at sigma 0.25 on 3 held-out calibration images" in texts(at)
    assert not any("was asked for" in w.value for w in at.warning)
