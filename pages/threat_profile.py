"""Page 3: the threat profile, i.e. DSmooth's covariance fitted to attack perturbations."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import streamlit as st

from dsmooth_core.profiles import Calibration, ProfileMismatchError, ThreatProfile, Tuning, check_usable
from dsmooth_core.settings import result_key
from dsmooth_core.tuning import TuningGrid
from dsmooth_lab_ui import bundled_profiles, choices, jobs, nav, profile_view, resources, state, tasks, widgets

JOB = "profile"
SOURCES = ("Bundled profile", "Load a profile file", "Build from calibration images")
TUNING_RANKS = TuningGrid().ranks  # the command line's default grid, below the rank asked for


def bundled_source() -> None:
    if not resources.bundled_profile_available():
        st.info(
            f"No bundled profile ({resources.BUNDLED_PROFILE.name}) ships with this copy yet. Build one "
            "below or load a file.",
            icon=":material/info:",
        )
        return
    tuned, _ = bundled_profiles.read(resources.BUNDLED_PROFILE)  # a failure to read one is reported when it is chosen
    paper, _ = bundled_profiles.read(resources.BUNDLED_PAPER_PROFILE)
    st.caption(bundled_profiles.bundled_caption(tuned, paper))
    c1, c2 = st.columns(2)
    if c1.button("Use the tuned profile (default)", key="profile_use_bundled"):
        _use_bundled(resources.BUNDLED_PROFILE, "bundled profile (tuned)")
    paper_knobs = "" if paper is None else f" ({bundled_profiles.short_knobs_text(paper.covariance)})"
    if resources.bundled_paper_profile_available() and c2.button(
        f"Use the paper's setting{paper_knobs}", key="profile_use_paper"
    ):
        _use_bundled(resources.BUNDLED_PAPER_PROFILE, "bundled profile (paper's setting)")


def _use_bundled(path: Path, source: str) -> None:
    try:
        choices.use_profile(resources.load_profile_file(path), source)
    except (ValueError, OSError, KeyError) as exc:
        state.put(state.PROFILE_ERROR, f"The bundled profile {path.name} could not be read: {exc}")


def file_source() -> None:
    upload = st.file_uploader(
        "Threat profile file (.pt, written by ThreatProfile.save)", type=["pt"], key="profile_file"
    )
    if upload is None or upload.file_id == st.session_state.get("profile_file_seen"):
        return
    st.session_state["profile_file_seen"] = upload.file_id
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "profile.pt"
        path.write_bytes(upload.getvalue())
        try:
            profile = ThreatProfile.load(path)
        except (ValueError, KeyError, OSError) as exc:
            state.put(state.PROFILE_ERROR, f"{upload.name} is not a usable threat profile: {exc}")
            return
    choices.use_profile(profile, f"file {upload.name}")


def build_source(model) -> None:
    st.caption(
        "The calibration images are attacked with the settings below and the covariance of the perturbations "
        "is fitted (probabilistic PCA with k directions). Use the train split: images used for calibration "
        "must not be certified (the certificate would leak)."
    )
    c1, c2, c3 = st.columns(3)
    split = c1.selectbox("Calibration split", ["train", "test"], key="prof_split", persist_state="session")
    n_images = c2.number_input(
        "Calibration images",
        min_value=2,
        max_value=5000,
        value=48,
        step=16,
        key="prof_n",
        persist_state="session",
    )
    subset_seed = c3.number_input("Subset seed", min_value=0, value=0, key="prof_subset_seed", persist_state="session")
    if split == "test":
        st.warning(
            "Calibrating on the test split: DSmooth will refuse to certify any test image in the calibration set.",
            icon=":material/warning:",
        )
    with st.expander("Attack used for calibration", expanded=False):
        config = widgets.attack_settings("prof_", "conventional", overrides={"n_queries": 100})
    c4, c5, c6, c7 = st.columns(4)
    k = c4.number_input("Rank k to fit", min_value=1, max_value=512, value=16, key="prof_k", persist_state="session")
    keep = c5.selectbox(
        "Perturbations kept",
        ["successful", "nonzero"],
        key="prof_keep",
        persist_state="session",
        help="successful: only attacks that fooled the model; nonzero: every non-zero perturbation.",
    )
    seed = c6.number_input("Attack seed", min_value=0, value=0, key="prof_seed", persist_state="session")
    batch = c7.number_input("Batch size", min_value=1, value=64, key="prof_batch", persist_state="session")
    tuning = tuning_settings(int(k), int(seed))
    images, error = resources.cifar10(split)
    if images is None:
        st.error(error, icon=":material/cloud_off:")
        return
    if model.info.dataset != "cifar10":
        st.error("Building a profile here needs a CIFAR-10 model (the calibration images are CIFAR-10).")
        return
    if not st.button("Build the profile", type="primary", disabled=config is None, icon=":material/build:"):
        return
    stamp = resources.cifar10_stamp(split)
    calibration = Calibration(
        size=int(n_images),
        attack=config,
        k=int(k),
        split=split,
        subset_seed=int(subset_seed),
        keep=keep,
        seed=int(seed),
        tuning=tuning,
    )

    def deliver(profile: ThreatProfile) -> None:
        tuned = "" if profile.tuning is None else ", tuned"
        choices.use_profile(profile, f"built here ({split}, {profile.n_kept}/{profile.n_attacked} kept{tuned})")
        if profile.tuning is None and profile.covariance.k < int(k):  # a tuned k is the tuning's choice
            state.put(
                state.PROFILE_NOTE,
                f"Rank k = {int(k)} was asked for, but {profile.n_kept} perturbations allow at most rank "
                f"{profile.covariance.rank}: the profile was fitted with k = {profile.covariance.k}. Attack more "
                "calibration images for a higher rank.",
            )

    jobs.start(
        JOB,
        "Building the profile",
        result_key(calibration.identity(model.info.identity, calibration.indices(images.labels)), stamp, int(batch)),
        functools.partial(tasks.profile, model, images, calibration, int(batch)),
        deliver,
        batch=int(batch),
        on_error=lambda message: state.put(state.PROFILE_ERROR, f"The profile could not be built: {message}"),
    )


def tuning_settings(k: int, seed: int) -> Tuning | None:
    """The tuning of DSmooth's knobs on held-out calibration images (docs/MATH.md section 3), if asked for."""
    with st.expander("Tune DSmooth's knobs on held-out calibration images", expanded=False):
        if not st.checkbox("Tune normalization, rank and shrinkage", key="prof_tune", persist_state="session"):
            return None
        c1, c2, c3 = st.columns(3)
        sigma = c1.number_input(
            "At sigma",
            min_value=0.01,
            max_value=2.0,
            value=0.25,
            step=0.05,
            key="prof_tune_sigma",
            persist_state="session",
        )
        share = c2.slider("Share held out", 0.1, 0.5, 0.2, 0.05, key="prof_tune_share", persist_state="session")
        n = c3.number_input(
            "Draws per certificate (n)",
            min_value=10,
            max_value=10_000,
            value=100,
            step=50,
            key="prof_tune_n",
            persist_state="session",
        )
        ranks = tuple(sorted({k, *(r for r in TUNING_RANKS if r < k)}, reverse=True))
        tuning = Tuning(sigma=float(sigma), share=float(share), grid=TuningGrid(ranks=ranks), n=int(n), seed=seed)
        grid = tuning.grid
        shrinkages = ", ".join(f"{g:g}" for g in grid.shrinkages)
        st.caption(
            f"The held-out images are certified (n0 = {tuning.n0}, n = {tuning.n}) under up to "
            f"{grid.most_settings} settings: {' and '.join(grid.normalizations)} normalization, k in "
            f"{', '.join(map(str, grid.ranks))}, shrinkage {shrinkages} and, for each normalization and k, the "
            f"largest shrinkage whose St keeps an axis ratio of at least {grid.min_axis_ratio:g}. Settings below "
            "that ratio are listed but not certified; the most correct certificates wins among the others. The "
            "rest of the images are attacked and fitted."
        )
        return tuning


def checks(model, choice: state.ProfileChoice) -> None:
    """Whether DSmooth may use this profile with the current model and image: the library's one decision."""
    image = state.get(state.IMAGE)
    try:
        check_usable(choice.profile, model, tuple(model.info.input_shape), *choices.calibration_place(image))
    except ProfileMismatchError as exc:
        st.error(f"{exc}. DSmooth will not certify with it here.", icon=":material/error:")
        return
    if image is not None and image.index is not None:
        st.success(
            f"The current image ({image.caption}) is not among the {len(choice.profile.indices)} "
            f"calibration images ({choice.profile.dataset} {choice.profile.split}).",
            icon=":material/check_circle:",
        )


nav.ensure_app()
st.title("Threat profile")
st.write(
    "DSmooth's noise is N(0, sigma^2 St), with St the covariance S of real attack perturbations rescaled to "
    "determinant 1 (the paper's choice) or to trace d (equal noise energy). S is estimated on calibration "
    "images that are never certified."
)
current_model = resources.current_model()
if current_model is None:
    nav.need("Choose a model first (the current one could not be loaded).", nav.MODEL_IMAGE)
else:
    with st.container(border=True):
        st.subheader("Get a profile")
        st.session_state.setdefault(
            "profile_source", SOURCES[0] if resources.bundled_profile_available() else SOURCES[2]
        )
        source = st.radio("Source", SOURCES, key="profile_source", horizontal=True, persist_state="session")
        if source == SOURCES[0]:
            bundled_source()
        elif source == SOURCES[1]:
            file_source()
        else:
            build_source(current_model)
        note = state.get(state.PROFILE_NOTE)
        if note:
            st.warning(note, icon=":material/warning:")
        error = state.get(state.PROFILE_ERROR)
        if error:
            st.error(error, icon=":material/error:")
    current = state.get(state.PROFILE)
    if current is None:
        st.info("No threat profile yet: DSmooth cannot run without one. Get one above.", icon=":material/info:")
    else:
        checks(current_model, current)
        profile_view.show(current)
        nav.link(nav.NOISE, "Next: look at the noise it shapes")
