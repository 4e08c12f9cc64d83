"""Every page's state is a link (issue 24): restore when a page opens from a link, sync after every run.

The app runs under AppTest (conftest.py: real CIFAR-10 from DSMOOTH_DATA_DIR or a tiny fake copy). A
"fresh browser" is a new AppTest whose first run opens the page with the link's query parameters.
"""

from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from dsmooth_core import certify
from dsmooth_core.attacks import PRESETS
from dsmooth_core.data import load_cifar10
from dsmooth_core.device import generator_for
from dsmooth_core.models import DEFAULT_MODEL, load_model
from dsmooth_lab_ui import gallery, lesson_defaults, links, nav, resources, state
from tests.apptest_jobs import finish_job

APP = Path(__file__).resolve().parents[1] / "app.py"
TIMEOUT = 240
SHARED_PAGES = [path for path in links.PAGES]


def fresh(page: str, params: dict[str, str] | None = None) -> AppTest:
    """A new session whose first run opens ``page`` with ``params`` in the URL (as a pasted link does)."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(params or {})
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def link_notes(at: AppTest) -> list[str]:
    return [w.value for w in at.warning if str(w.value).startswith("The link")]


def link_of(at: AppTest) -> dict[str, str]:
    """The link the page shows in its Copy-link control (the sidebar's code block), as parameters."""
    codes = [c.value for c in at.sidebar.get("code")]
    assert len(codes) == 1, codes
    return dict(parse_qsl(urlsplit(codes[0]).query))


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def has_profile() -> bool:
    return resources.bundled_profile_available()


# ---------------------------------------------------------------- the mirrored option strings
def test_the_option_strings_links_writes_are_the_pages_own(app_env: Path) -> None:
    at = fresh(nav.MODEL_IMAGE)
    assert set(links.IMAGE_SOURCES.values()) <= set(at.radio(key="image_source").options)
    at = fresh(nav.NOISE)
    options = [float(o) for o in at.multiselect(key="noise_sigmas").options]
    assert options == list(links.NOISE_SIGMAS)
    at = fresh(nav.PROFILE)
    assert set(links.PROFILE_SOURCES.values()) <= set(at.radio(key="profile_source").options)
    if has_profile():
        assert at.session_state[state.PROFILE].source == links.TUNED_SOURCE  # the app's default is "tuned"
    if resources.bundled_paper_profile_available():
        next(b for b in at.button if b.key == "profile_use_paper").click().run()
        assert at.session_state[state.PROFILE].source == links.PAPER_SOURCE
        assert link_of(at)["profile"] == "paper"


# ---------------------------------------------------------------- sync: the address bar holds the page's state
def test_every_page_writes_its_state_and_shows_the_link(app_env: Path) -> None:
    at = fresh(nav.MODEL_IMAGE)
    for page in SHARED_PAGES:
        at.switch_page(page).run()
        clean(at)
        shown = link_of(at)
        assert {k: v if isinstance(v, str) else v[-1] for k, v in at.query_params.items()} == shown
        groups = links.PAGES[page]
        if not groups:
            assert shown == {}
        if links.MODEL in groups:
            assert shown["model"] == DEFAULT_MODEL
        if links.IMAGE in groups:
            assert shown["image"] == at.session_state[state.IMAGE].image_id


def test_a_change_goes_into_the_url_and_a_rerun_does_not_undo_it(app_env: Path) -> None:
    at = fresh(nav.CERTIFY)
    at.number_input(key="cert_sigma").set_value(0.5).run()
    assert at.query_params["sigma"] == "0.5"
    at.number_input(key="cert_n").set_value(300).run()  # the URL still said sigma 0.5: no restore on reruns
    clean(at)
    assert at.number_input(key="cert_sigma").value == 0.5 and at.query_params["n"] == "300"


def test_another_pages_parameters_left_in_the_url_are_not_a_link(app_env: Path) -> None:
    at = fresh(nav.NOISE)
    at.number_input(key="noise_seed").set_value(5).run()
    assert at.query_params["seed"] == "5"
    at.switch_page(nav.CERTIFY).run()  # the URL still holds the Noise explorer's seed
    clean(at)
    assert at.number_input(key="cert_seed").value == 0
    assert at.query_params["seed"] == "0"


def lesson_image_id(data_dir: Path) -> str:
    """The lesson's measured pick (lesson_defaults): the CIFAR-10 index when the data has it, else the gallery's."""
    if len(load_cifar10("test", data_dir, download=False).labels) > lesson_defaults.CIFAR_INDEX:
        return f"cifar10-test:{lesson_defaults.CIFAR_INDEX}"
    return f"gallery:{lesson_defaults.GALLERY_FILE}"


@pytest.mark.parametrize("page", [nav.MODEL_IMAGE, nav.ATTACK, nav.CERTIFY])
def test_every_page_opens_on_the_lessons_image(app_env: Path, page: str) -> None:
    """One default image for the whole app, chosen so that the three methods' radii differ (issue 24)."""
    at = fresh(page)
    assert at.session_state[state.IMAGE].image_id == lesson_image_id(app_env)
    assert link_of(at)["image"] == lesson_image_id(app_env)


def test_a_link_without_an_image_opens_on_the_default_image_with_its_settings(app_env: Path) -> None:
    at = fresh(nav.CERTIFY, {"sigma": "0.37", "n": "200"})
    assert not link_notes(at)
    assert at.session_state[state.IMAGE].image_id == lesson_image_id(app_env)
    assert (at.number_input(key="cert_sigma").value, at.number_input(key="cert_n").value) == (0.37, 200)
    assert link_of(at)["image"] == lesson_image_id(app_env)  # and its own link now names the image


# ---------------------------------------------------------------- restore: a link reproduces the page
def test_a_certify_link_opens_with_the_same_settings(app_env: Path) -> None:
    at = fresh(nav.MODEL_IMAGE)
    at.number_input(key="gallery_jump").set_value(7).run()
    at.button(key="gallery_jump_go").click().run()
    at.switch_page(nav.CERTIFY).run()
    at.multiselect(key="cert_methods").set_value(["RandSmooth", "LSmooth"]).run()
    at.number_input(key="cert_sigma").set_value(0.37).run()
    at.number_input(key="cert_n0").set_value(20).run()
    at.number_input(key="cert_n").set_value(200).run()
    at.number_input(key="cert_alpha").set_value(0.01).run()
    at.number_input(key="cert_seed").set_value(11).run()
    clean(at)
    link = link_of(at)
    assert link["image"] == "cifar10-test:7" and link["methods"] == "randsmooth,lsmooth"

    other = fresh(nav.CERTIFY, link)
    assert not link_notes(other)
    assert other.session_state[state.IMAGE].image_id == "cifar10-test:7"
    assert other.multiselect(key="cert_methods").value == ["RandSmooth", "LSmooth"]
    for key, value in (("cert_sigma", 0.37), ("cert_n0", 20), ("cert_n", 200), ("cert_alpha", 0.01), ("cert_seed", 11)):
        assert other.number_input(key=key).value == value, key
    assert link_of(other) == link  # and it links back to the same state


def test_the_same_click_on_a_shared_link_gives_the_same_radii_as_the_library(app_env: Path) -> None:
    params = {"image": "cifar10-test:3", "methods": "randsmooth,lsmooth", "sigma": "0.5", "n0": "10", "n": "100"}
    found = []
    for _ in range(2):  # two fresh sessions from the same link (the second may be served by the result cache)
        at = fresh(nav.CERTIFY, params)
        next(b for b in at.button if b.label == "Certify").click()
        finish_job(at, TIMEOUT)
        clean(at)
        record = at.session_state[state.CERTIFY]
        found.append([(noise.name, cert.radius, cert.p_lower) for noise, cert in record.results])
    assert found[0] == found[1] and [name for name, _, _ in found[0]] == ["RandSmooth", "LSmooth"]
    # and they are the library's numbers for the link's inputs
    model, x = load_model(DEFAULT_MODEL), at.session_state[state.X_MEMO][1]
    expected = []
    for noise, _ in record.results:
        s = record.settings[noise.key]
        assert (s.sigma, s.n0, s.n, s.alpha, s.seed) == (0.5, 10, 100, 0.001, 0)
        cert = certify(model, x, noise, s.n0, s.n, s.alpha, s.batch, generator_for(model, s.seed))
        expected.append((noise.name, cert.radius, cert.p_lower))
    assert found[0] == expected


def test_an_attack_link_restores_every_setting(app_env: Path) -> None:
    at = fresh(nav.ATTACK)
    at.selectbox(key="atk_preset").set_value("reachable").run()
    at.number_input(key="atk_n_queries").set_value(20).run()  # now custom
    at.number_input(key="atk_seed").set_value(4).run()
    link = link_of(at)
    assert link["preset"] == "custom" and link["queries"] == "20" and link["eps_inf"] == repr(2 / 255)
    other = fresh(nav.ATTACK, link)
    assert not link_notes(other)
    assert other.selectbox(key="atk_preset").value == "custom"
    assert other.number_input(key="atk_eps_inf").value == 2 / 255  # bit for bit: floats travel as repr
    assert other.number_input(key="atk_n_queries").value == 20 and other.number_input(key="atk_seed").value == 4
    # a preset alone brings its values
    paper = fresh(nav.ATTACK, {"preset": "paper"})
    assert paper.number_input(key="atk_n_queries").value == 5000 and paper.selectbox(key="atk_preset").value == "paper"


def test_a_custom_structured_threat_keeps_its_support_in_the_link(app_env: Path) -> None:
    """The patch preset made custom by another field still moves only its window when the link is opened."""
    at = fresh(nav.ATTACK)
    at.selectbox(key="atk_preset").set_value("patch").run()
    at.number_input(key="atk_n_queries").set_value(20).run()  # now custom
    link = link_of(at)
    assert link["preset"] == "custom" and link["support"] == "-8,-8,8/1/0.0"
    other = fresh(nav.ATTACK, link)
    assert not link_notes(other)
    assert other.session_state["atk_support"] == PRESETS["patch"].support
    assert link_of(other) == link
    bad = fresh(nav.ATTACK, {**link, "support": "1,2/x/0"})
    assert any("support" in note for note in link_notes(bad))  # a note, and the default's support
    assert bad.session_state["atk_support"].whole_image


def test_an_experiments_link_restores_its_grid_but_no_server_paths(app_env: Path) -> None:
    params = {"methods": "randsmooth,lsmooth", "sigmas": "0.25, 0.5", "ns": "200", "n0": "30", "images": "12"}
    at = fresh(nav.EXPERIMENTS, {**params, "seed": "4", "preset": "paper", "gamma": "0.05"})
    clean(at)
    assert not link_notes(at)
    assert at.multiselect(key="exp_methods").value == ["randsmooth", "lsmooth"]
    assert at.text_input(key="exp_sigmas").value == "0.25, 0.5" and at.text_input(key="exp_ns").value == "200"
    assert at.number_input(key="exp_n0").value == 30 and at.number_input(key="exp_size").value == 12
    assert at.number_input(key="exp_seed").value == 4 and at.selectbox(key="exp_attack").value == "paper"
    link = link_of(at)
    assert {name: link[name] for name in params} == params
    assert "folder" not in link and not any("ray" in name for name in link)


def test_a_2d_world_link_restores_the_plane_the_noise_and_the_point(app_env: Path) -> None:
    params = {"data": "two blobs", "classifier": "linear", "sigma": "0.12", "angle": "30", "u": "0.6", "v": "0.25"}
    at = fresh(nav.WORLD, params)
    clean(at)
    assert not link_notes(at)
    assert at.selectbox(key="world_dataset").value == "two blobs"
    assert at.selectbox(key="world_classifier").value == "linear"
    assert at.slider(key="world_sigma").value == 0.12 and at.slider(key="world_angle").value == 30
    assert at.number_input(key="world_u").value == 0.6 and at.number_input(key="world_v").value == 0.25
    assert {name: link_of(at)[name] for name in params} == params


def test_a_noise_link_restores_levels_seeds_and_votes(app_env: Path) -> None:
    params = {"sigmas": "0.05,0.5,2", "seed": "9", "votes_sigma": "2.0", "draws": "60", "votes_seed": "3"}
    at = fresh(nav.NOISE, params)
    clean(at)
    assert not link_notes(at)
    assert at.multiselect(key="noise_sigmas").value == [0.05, 0.5, 2.0]
    assert at.number_input(key="noise_seed").value == 9
    assert at.selectbox(key="votes_sigma").value == 2.0
    assert at.number_input(key="votes_count").value == 60 and at.number_input(key="votes_seed").value == 3


def test_a_gallery_sample_and_an_untrained_model_come_back(app_env: Path) -> None:
    sample = gallery.samples()[2]
    at = fresh(nav.MODEL_IMAGE, {"model": DEFAULT_MODEL, "pretrained": "0", "image": f"gallery:{sample.file}"})
    clean(at)
    assert not link_notes(at)
    assert at.session_state[state.MODEL] == state.ModelChoice(DEFAULT_MODEL, pretrained=False)
    assert at.toggle(key="model_untrained").value is True
    assert at.session_state[state.IMAGE].image_id == f"gallery:{sample.file}"
    assert at.radio(key="image_source").value == links.IMAGE_SOURCES["gallery"]
    assert link_of(at)["pretrained"] == "0"


@pytest.mark.skipif(not has_profile(), reason="needs the bundled threat profile")
def test_a_profile_link_restores_the_bundled_profile_and_its_shape(app_env: Path) -> None:
    at = fresh(nav.PROFILE, {"profile": "tuned", "norm": "det", "k": "3", "shrink": "0.25"})
    clean(at)
    assert not link_notes(at)
    choice = at.session_state[state.PROFILE]
    assert (choice.source, choice.normalization, choice.k, choice.shrinkage) == (links.TUNED_SOURCE, "det", 3, 0.25)
    assert at.slider(key="profile_k").value == 3 and at.radio(key="profile_normalization").value == "det"
    certify = fresh(nav.CERTIFY, link_of(at) | {"methods": "dsmooth"})
    assert certify.session_state[state.PROFILE].shape == choice.shape
    assert certify.multiselect(key="cert_methods").value == ["DSmooth"]


def test_a_built_profile_link_restores_its_calibration_settings_and_asks_to_build(app_env: Path) -> None:
    params = {
        "profile": "built",
        "cal_split": "train",
        "cal_n": "32",
        "cal_k": "4",
        "cal_queries": "10",
        "cal_seed": "2",
    }
    at = fresh(nav.PROFILE, params)
    clean(at)
    assert any("Build the profile" in note for note in link_notes(at))
    assert at.session_state[state.PROFILE] is None  # no other profile stands in for the link's
    assert at.radio(key="profile_source").value == links.PROFILE_SOURCES["built"]
    assert at.number_input(key="prof_n").value == 32 and at.number_input(key="prof_k").value == 4
    assert at.number_input(key="prof_n_queries").value == 10 and at.number_input(key="prof_seed").value == 2


def test_a_built_profile_takes_the_links_shape_once_it_is_built(app_env: Path) -> None:
    params = {"profile": "built", "cal_split": "train", "cal_n": "12", "cal_k": "4", "cal_keep": "nonzero"}
    params |= {"cal_queries": "10", "norm": "det", "k": "2", "shrink": "0.5"}
    at = fresh(nav.PROFILE, params)
    assert at.session_state[state.PROFILE] is None
    next(b for b in at.button if b.label == "Build the profile").click()
    finish_job(at, TIMEOUT)
    clean(at)
    choice = at.session_state[state.PROFILE]
    assert links.profile_kind(choice) == "built" and choice.profile.n_attacked == 12
    assert (choice.normalization, choice.k, choice.shrinkage) == ("det", 2, 0.5)
    link = link_of(at)
    assert {name: link[name] for name in params} == params  # and its link says so


# ---------------------------------------------------------------- bad and stale values: a note, the default
BAD_LINKS = [
    (nav.MODEL_IMAGE, {"model": "no_such_net"}, "model"),
    (nav.MODEL_IMAGE, {"model": DEFAULT_MODEL, "pretrained": "maybe"}, "pretrained"),
    (nav.MODEL_IMAGE, {"image": "cifar10-test:1000000"}, "image"),
    (nav.MODEL_IMAGE, {"image": "cifar10-test:-3"}, "image"),
    (nav.MODEL_IMAGE, {"image": "gallery:gone.png"}, "image"),
    (nav.MODEL_IMAGE, {"image": "imagenet-sample:gone.JPEG"}, "image"),
    (nav.MODEL_IMAGE, {"image": "%%garbage"}, "image"),
    (nav.CERTIFY, {"sigma": "0"}, "sigma"),
    (nav.CERTIFY, {"sigma": "-0.5"}, "sigma"),
    (nav.CERTIFY, {"sigma": "nan"}, "sigma"),
    (nav.CERTIFY, {"n": "lots"}, "n"),
    (nav.CERTIFY, {"n0": "500", "n": "100"}, "n0"),
    (nav.CERTIFY, {"alpha": "1.5"}, "alpha"),
    (nav.CERTIFY, {"methods": "dsmooth,magic"}, "methods"),
    (nav.CERTIFY, {"seed": "-1"}, "seed"),
    (nav.CERTIFY, {"profile": "mystery"}, "profile"),
    (nav.CERTIFY, {"profile": "tuned", "k": "100000"}, "k"),
    (nav.CERTIFY, {"profile": "tuned", "norm": "l7"}, "norm"),
    (nav.ATTACK, {"eps_inf": "big"}, "eps_inf"),
    (nav.ATTACK, {"preset": "nuclear"}, "preset"),
    (nav.ATTACK, {"queries": "0"}, "queries"),
    (nav.NOISE, {"sigmas": "0.3"}, "sigmas"),
    (nav.NOISE, {"draws": "5"}, "draws"),
    (nav.PROFILE, {"profile": "built", "cal_n": "1"}, "cal_n"),
    (nav.EXPERIMENTS, {"sigmas": "0.25; rm -rf"}, "sigmas"),
    (nav.EXPERIMENTS, {"preset": "nuclear"}, "preset"),
]


@pytest.mark.parametrize(
    ("page", "params", "name"), BAD_LINKS, ids=[f"{p[2]}={next(iter(p[1].values()))}" for p in BAD_LINKS]
)
def test_a_bad_value_gives_a_note_and_the_default(app_env: Path, page: str, params: dict, name: str) -> None:
    if params.get("profile") == "tuned" and not has_profile():
        pytest.skip("needs the bundled threat profile")
    at = fresh(page, params)
    clean(at)
    notes = [note for note in link_notes(at) if " was ignored " in note]  # not the built profile's "build it"
    assert len(notes) == 1 and f"link's {name} = " in notes[0], notes
    default = fresh(page)
    assert at.session_state[state.MODEL] == default.session_state[state.MODEL]
    assert at.session_state[state.IMAGE].image_id == default.session_state[state.IMAGE].image_id
    mine, theirs = link_of(at), link_of(default)
    if page != nav.PROFILE:  # a built profile's other settings did come back
        assert mine.get(name) == theirs.get(name), (mine, theirs)


def test_unknown_parameters_are_named_and_ignored(app_env: Path) -> None:
    at = fresh(nav.CERTIFY, {"sigma": "0.5", "utm_source": "mail", "zzz": "1"})
    clean(at)
    assert link_notes(at) == ["The link's unknown parameters were ignored: utm_source, zzz."]
    assert at.number_input(key="cert_sigma").value == 0.5


def test_uploads_cannot_be_shared_and_say_so(app_env: Path) -> None:
    at = fresh(nav.MODEL_IMAGE)
    at.radio(key="image_source").set_value("Upload").run()
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 30)).save(buffer, format="PNG")
    next(u for u in at.file_uploader if u.key == "upload_file").upload("green.png", buffer.getvalue(), "image/png")
    at.run()
    clean(at)
    assert link_of(at)["image"] == links.UPLOAD
    assert any("image is an upload" in c.value for c in at.sidebar.get("caption"))
    other = fresh(nav.MODEL_IMAGE, link_of(at))
    assert any("uploaded image" in note for note in link_notes(other))
    assert other.session_state[state.IMAGE].source != "upload"
    model_link = fresh(nav.ATTACK, {"model": links.UPLOAD})
    assert any("uploaded model" in note for note in link_notes(model_link))


def _url_for_script() -> None:
    import streamlit as st

    from dsmooth_lab_ui import links, nav

    st.session_state["cert_sigma"] = 0.5
    st.session_state["cert_methods"] = ["RandSmooth", "LSmooth"]
    st.code(links.url_for(nav.CERTIFY, n=200, alpha=0.01))
    st.code(links.url_for(nav.PAGES[0].path))  # the default page
    st.code(links.url_for(nav.ABOUT))


def test_address_links_a_page_with_exactly_the_given_parameters_it_reads() -> None:
    """What a benchmark hands each browser: no session state, and a name the page does not read refused."""
    assert links.address(nav.ATTACK, queries=200, seed=3) == "attack?queries=200&seed=3"
    assert links.address(nav.CERTIFY, image="cifar10-test:5400", n=100) == "certify?image=cifar10-test%3A5400&n=100"
    assert links.address(nav.ABOUT) == "about"
    with pytest.raises(ValueError, match="reads no link parameter n"):
        links.address(nav.ATTACK, seed=1, n=100)


def test_url_for_links_a_page_with_the_current_state_and_overrides() -> None:
    at = AppTest.from_function(_url_for_script).run()
    clean(at)
    certify, first, about = (c.value for c in at.code)
    assert certify == "certify?profile=none&methods=randsmooth%2Clsmooth&sigma=0.5&n=200&alpha=0.01"
    assert first == "./" and about == "about"
    assert links.url_path(nav.PAGES[0].path) == "" and links.url_path(nav.CERTIFY) == "certify"
    assert links.url_path(nav.MODEL_IMAGE) == "model_image"  # the guided lesson is the default page


def test_a_page_parameter_opens_that_page_with_the_links_settings(app_env: Path) -> None:
    at = fresh(nav.MODEL_IMAGE, {links.PAGE_PARAM: "certify", "sigma": "0.5"})
    assert at.title[0].value == "Certify"
    assert at.number_input(key="cert_sigma").value == 0.5 and links.PAGE_PARAM not in at.query_params
    assert not link_notes(at)


def _page_draws_its_own_control() -> None:
    import streamlit as st

    from dsmooth_lab_ui import links, nav

    links.opened(nav.ABOUT)
    links.copy_link_control(nav.ABOUT)  # the page's own, where it suits the page
    links.sidebar_control(nav.ABOUT, st.sidebar.container())  # app.py's then draws nothing


def test_a_page_that_draws_its_own_copy_link_control_gets_one() -> None:
    at = AppTest.from_function(_page_draws_its_own_control).run()
    clean(at)
    assert [c.value for c in at.code] == ["about"] and not at.sidebar.get("code")


def test_an_imagenet_sample_link_selects_it(app_env: Path) -> None:
    samples = sorted((app_env / "imagenet_sample").glob("*.JPEG"))
    if not samples:
        pytest.skip("no ImageNet sample in the data folder")
    at = fresh(nav.MODEL_IMAGE, {"image": f"imagenet-sample:{samples[1].name}"})
    clean(at)
    assert not link_notes(at)
    assert at.session_state[state.IMAGE].image_id == f"imagenet-sample:{samples[1].name}"
    assert at.radio(key="image_source").value == links.IMAGE_SOURCES["imagenet"]
    assert link_of(at)["image"] == f"imagenet-sample:{samples[1].name}"
