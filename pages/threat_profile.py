"""Page 3: the threat profile, i.e. DSmooth's covariance fitted to attack perturbations."""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path

import streamlit as st

from dsmooth_core.errors import InputRefused
from dsmooth_core.profiles import Calibration, ProfileMismatchError, ThreatProfile, Tuning, check_usable
from dsmooth_core.settings import ProfileShape, result_key
from dsmooth_core.tuning import TuningGrid
from dsmooth_lab_ui import choices, figures, jobs, nav, profile_shape, resources, sidebar, state, tasks, widgets
from dsmooth_lab_ui.images import eigen_images

JOB = "profile"
SOURCES = ("Bundled profile", "Load a profile file", "Build from calibration images")
N_EIGEN_IMAGES = 8
TUNING_RANKS = (100, 30, 10)  # the command line's default grid, below the rank asked for

SHAPE_FRAGMENT = "dsl_profile_shape"


def _update_shape() -> None:
    choice: state.ProfileChoice | None = state.get(state.PROFILE)
    if choice is None:
        return
    try:
        shape = ProfileShape(
            normalization=str(st.session_state["profile_normalization"]),
            k=int(st.session_state["profile_k"]),
            shrinkage=float(st.session_state["profile_shrinkage"]),
        )
    except InputRefused as exc:  # the widgets' bounds keep these valid; say so if one ever is not
        state.put(state.PROFILE_ERROR, str(exc))
        return
    state.put(state.PROFILE, dataclasses.replace(choice, shape=shape))
    st.rerun([SHAPE_FRAGMENT, sidebar.PROFILE_FRAGMENT])  # the controls' own view and the sidebar's line


def bundled_source() -> None:
    if not resources.bundled_profile_available():
        st.info(
            f"No bundled profile ({resources.BUNDLED_PROFILE.name}) ships with this copy yet. Build one "
            "below or load a file.",
            icon=":material/info:",
        )
        return
    st.caption(
        "Two profiles ship with the bundled ResNet-20, both fitted to the reachable threat (2/255) on CIFAR-10 "
        "training images. **Tuned** (the default): normalization, rank and shrinkage chosen on held-out "
        "calibration images, as docs/REPRODUCTION.md reports. **Paper's setting**: det normalization, k = 100, "
        "no shrinkage, as the DSmooth paper defines it."
    )
    c1, c2 = st.columns(2)
    if c1.button("Use the tuned profile (default)", key="profile_use_bundled"):
        _use_bundled(resources.BUNDLED_PROFILE, "bundled profile (tuned)")
    if resources.bundled_paper_profile_available() and c2.button(
        "Use the paper's setting (det, k = 100)", key="profile_use_paper"
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
        grid = TuningGrid(ranks=ranks)
        settings = len(grid.normalizations) * len(grid.ranks) * len(grid.shrinkages)
        shrinkages = ", ".join(f"{g:g}" for g in grid.shrinkages)
        st.caption(
            f"The held-out images are certified (n0 = 100, n = {int(n)}) under {settings} settings: det and trace "
            f"normalization, k in {', '.join(map(str, ranks))}, shrinkage {shrinkages}. "
            f"The most correct certificates wins among settings whose St keeps an axis ratio of at least "
            f"{grid.min_axis_ratio:g}; the rest of the images are attacked and fitted."
        )
        return Tuning(sigma=float(sigma), share=float(share), grid=grid, n=int(n), seed=seed)


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


def tuning_view(record: dict) -> None:
    """The table a tuned profile carries: every setting tried on held-out calibration images, the choice marked."""
    choice = record["choice"]
    st.markdown(
        f"**Tuned** at sigma {record['sigma']:g} on {len(record['tuning_indices'])} held-out calibration images "
        f"(fitted on the other {len(record['fitting_indices'])}): {choice['normalization']} normalization, "
        f"k = {choice['k']}, shrinkage {choice['shrinkage']:g}, certified {choice['certified']}/{choice['images']} "
        "at r = 0. Settings with an axis ratio below the minimum were not eligible (they would be RandSmooth)."
    )
    rows = [{"chosen": row == choice, **row} for row in record["table"]]
    st.dataframe(rows, hide_index=True)


def profile_view(model, choice: state.ProfileChoice) -> None:
    p = choice.profile
    fitted = p.covariance
    checks(model, choice)
    c = st.columns(4)
    c[0].metric("Perturbations kept", f"{p.n_kept} / {p.n_attacked}", help=f"keep = {p.keep}")
    c[1].metric("Fitted rank k", fitted.k, help=f"data rank {fitted.rank}; k is at most the data rank")
    c[2].metric("Dimension d", f"{fitted.dim:,}")
    c[3].metric(
        "Calibration split",
        f"{p.dataset} {p.split}",
        help=f"built for {p.model_name}, weights {p.model_hash[:16]}",
    )
    if fitted.residual_floored:
        st.warning("The residual variance was floored (k reached the data rank) to keep S positive definite.")
    if p.tuning is not None:
        tuning_view(p.tuning)

    shape_view()
    st.caption("Download any chart as PNG with the camera icon in its toolbar.")
    fitted_hash = fitted.content_hash()
    st.download_button(
        "Download this profile (.pt, as fitted; rank and shrinkage are chosen when used)",
        resources.profile_bytes(p),
        file_name=f"threat_profile_{p.model_name}_{p.split}_{fitted_hash[:8]}.pt",
        mime="application/octet-stream",
        on_click="ignore",
        icon=":material/download:",
    )


@st.fragment(key=SHAPE_FRAGMENT)
def shape_view() -> None:
    """Rank, shrinkage and normalization with the numbers and charts they change: a change redraws only this."""
    choice: state.ProfileChoice = state.get(state.PROFILE)
    fitted = choice.profile.covariance
    st.subheader("Rank, shrinkage and normalization (no refit)")
    st.markdown(f"**In use:** {choice.describe()}")  # inside the fragment, so a change here redraws it
    st.session_state.setdefault("profile_k", choice.k)
    st.session_state.setdefault("profile_shrinkage", choice.shrinkage)
    st.session_state.setdefault("profile_normalization", choice.normalization)
    st.radio(
        "Normalization of St",
        ("det", "trace"),
        key="profile_normalization",
        on_change=_update_shape,
        horizontal=True,
        format_func=lambda name: {
            "det": "det(St) = 1: the volume of N(0, I) (the paper's)",
            "trace": "trace(St) = d: the noise energy of N(0, I)",
        }[name],
    )
    s1, s2 = st.columns(2)
    s1.slider(
        "Rank k in use",
        min_value=1,
        max_value=max(fitted.k, 2),
        key="profile_k",
        on_change=_update_shape,
        disabled=fitted.k < 2,
        help="Keep the top k directions; the dropped variance joins the isotropic residual.",
    )
    s2.slider(
        "Shrinkage toward isotropy (0 = fitted, 1 = exactly RandSmooth)",
        min_value=0.0,
        max_value=1.0,
        step=0.05,
        key="profile_shrinkage",
        on_change=_update_shape,
    )
    cov = choice.covariance
    shape = profile_shape.shape_summary(cov)
    m = st.columns(4)
    m[0].metric("mu_min (smallest eigenvalue of St)", f"{shape['mu_min']:.4g}")
    m[1].metric("mu_max (largest eigenvalue of St)", f"{shape['mu_max']:.4g}")
    m[2].metric("Axis ratio sqrt(mu_max / mu_min)", f"{shape['axis_ratio']:.3g}")
    m[3].metric(
        "log vol(inscribed ball) / vol(ellipsoid)",
        f"{shape['inscribed_log_volume_ratio']:.4g}",
        help="(d/2) log mu_min - (1/2) log det St, natural log (log det St = 0 for det normalization): the l2 "
        "ball of radius R sqrt(mu_min) that fits inside the ellipsoid has this much less log-volume.",
    )
    if cov.normalization == "det":
        volume = (
            "**Volume.** St = S / det(S)^(1/d) has determinant 1, so DSmooth's certified ellipsoid of radius R "
            "has exactly the volume of the l2 ball of radius R: the shape moves volume around, it does not add "
            "any."
        )
    else:
        volume = (
            "**Noise energy.** St = S d / trace(S) has trace d, so DSmooth's noise has the expected squared "
            "norm of N(0, sigma^2 I). Its ellipsoid of radius R is smaller than the l2 ball of radius R "
            f"(log det St = {shape['logdet_St']:.4g}: "
            "as much volume as the l2 ball of radius "
            f"{shape['equal_volume_factor']:.3g} R)."
        )
    st.markdown(
        f"{volume} In every direction it still contains the l2 ball of radius R sqrt(mu_min) = "
        f"{shape['inscribed_radius_factor']:.3g} R and it reaches R sqrt(mu_max) = "
        f"{shape['axis_ratio'] * shape['inscribed_radius_factor']:.3g} R along its longest axis. A DSmooth "
        "radius is a Mahalanobis radius, not an l2 guarantee."
    )
    st.caption(
        f"log det S_k = {shape['logdet_S']:.5g}, det(S_k)^(1/d) = {shape['geometric_mean']:.4g}, residual "
        f"variance rho^2 = {shape['residual_variance']:.4g}, explained variance of the fitted top "
        f"{fitted.k}: {shape['explained_variance']:.1%}."
    )

    left, right = st.columns(2)
    with left:
        st.plotly_chart(
            figures.spectrum_figure(
                fitted.base_eigenvalues.tolist(),
                cov.eigenvalues.tolist(),
                residual_fitted=fitted.base_residual,
                residual_effective=cov.residual_variance,
                k_used=cov.k,
            ),
            key="profile_spectrum",
            width="stretch",
        )
    with right:
        st.plotly_chart(
            figures.explained_variance_figure(profile_shape.cumulative_explained(fitted), cov.k),
            key="profile_explained",
            width="stretch",
        )
    pictures = eigen_images(cov.eigenvectors, tuple(cov.shape), N_EIGEN_IMAGES)
    st.plotly_chart(
        figures.image_grid(
            [pictures],
            col_titles=[f"u{i + 1}<br>lambda {v:.2g}" for i, v in enumerate(cov.eigenvalues.tolist()[: len(pictures)])],
            title="Top eigen-perturbations (the attack's main directions; sign arbitrary, around grey)",
            cell_px=130,
        ),
        key="profile_eigen",
        width="stretch",
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
        profile_view(current_model, current)
        nav.link(nav.NOISE, "Next: look at the noise it shapes")
