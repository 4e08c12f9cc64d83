"""The Threat profile page's views of the profile in use: fit, tuning table, shape controls and charts.

Why a module: the page gathers where the profile comes from (bundled, file, build) and checks it
against the model and image; how a profile looks is drawn here, its numbers read from the
``ThreatProfile``, its covariance and ``profile_shape.shape_summary``.
"""

from __future__ import annotations

import dataclasses

import streamlit as st

from dsmooth_core.errors import InputRefused
from dsmooth_core.settings import ProfileShape
from dsmooth_lab_ui import figures, profile_shape, resources, sidebar, state
from dsmooth_lab_ui.images import eigen_images

N_EIGEN_IMAGES = 8
SHAPE_FRAGMENT = "dsl_profile_shape"


def _update_shape() -> None:
    """``on_change`` of the shape controls: the profile in use takes the new knobs (no refit)."""
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


def tuning_table(record: dict) -> None:
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


def show(choice: state.ProfileChoice) -> None:
    """The profile in use: what was fitted, its tuning record, its shape controls and a download."""
    p = choice.profile
    fitted = p.covariance
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
        tuning_table(p.tuning)

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
        f"{shape['longest_axis_factor']:.3g} R along its longest axis. A DSmooth "
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
