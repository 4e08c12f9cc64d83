"""Page 5: certify the image with DSmooth, RandSmooth and LSmooth, and compare them honestly."""

from __future__ import annotations

import streamlit as st
import torch

from dsmooth_core import SmoothingNoise, radius_ceiling
from dsmooth_core.noise import METHOD_CLASSES
from dsmooth_core.settings import CertifySettings
from dsmooth_lab_ui import certify_view, choices, nav, resources, state, submissions, widgets

KEYS = {cls.name: key for key, cls in METHOD_CLASSES.items()}  # the multiselect shows display names
GPU = torch.cuda.is_available()


def settings(profile: state.ProfileChoice | None) -> list[tuple[CertifySettings, SmoothingNoise]]:
    """Each chosen method's settings with its noise (built once); none when an input is refused."""
    available = [cls.name for cls in METHOD_CLASSES.values() if profile is not None or not cls.needs_profile]
    chosen = st.session_state.get("cert_methods")
    # keep the user's choice, minus a method that became unavailable (e.g. the profile was dropped)
    st.session_state["cert_methods"] = available if chosen is None else [m for m in chosen if m in available]
    methods = st.multiselect("Methods", available, key="cert_methods")
    c = st.columns(6)
    sigma = c[0].number_input(
        "sigma (noise level)", value=0.25, step=0.05, format="%.3f", key="cert_sigma", persist_state="session"
    )
    n0 = c[1].number_input("n0 (selection draws)", value=100, step=10, key="cert_n0", persist_state="session")
    n = c[2].number_input("n (estimation draws)", value=1000, step=100, key="cert_n", persist_state="session")
    alpha = c[3].number_input(
        "alpha (failure probability)",
        value=0.001,
        step=0.001,
        format="%.4g",
        key="cert_alpha",
        persist_state="session",
    )
    batch = c[4].number_input(
        "Batch size",
        min_value=1,
        value=1000 if GPU else 200,
        step=50,
        key="cert_batch",
        persist_state="session",
    )
    seed = c[5].number_input("Seed", min_value=0, value=0, key="cert_seed", persist_state="session")
    st.caption(
        "sigma is the per-pixel standard deviation in [0,1] pixel units for all three methods (LSmooth: "
        "Laplace scale sigma / sqrt 2, matched in variance; DSmooth: N(0, sigma^2 St), with det St = 1 or "
        "trace St = d as chosen on the Threat profile page)."
    )
    if GPU:
        st.info("A GPU is available: n = 100,000 (as in the paper) raises the radius ceiling to about 3.8 sigma.")
    problems = widgets.check_certify_inputs(sigma, n0, n, alpha)  # every problem at once, in the widgets' words
    for problem in problems:
        st.error(problem, icon=":material/error:")
    if not methods:
        st.error("Choose at least one method.", icon=":material/error:")
    if problems or not methods:
        return []
    try:
        runs = [
            (s, s.noise(profile.covariance if profile else None))
            for s in (CertifySettings(KEYS[m], sigma, int(n0), int(n), alpha, int(batch), int(seed)) for m in methods)
        ]
    except ValueError as exc:  # the core's one validation (InputRefused is a ValueError)
        st.error(str(exc), icon=":material/error:")
        return []
    ceilings = [f"{noise.name} {radius_ceiling(noise, s.n, s.alpha):.3g} ({noise.metric_label})" for s, noise in runs]
    st.caption(
        f"Radius ceiling for n = {int(n):,} and alpha = {alpha:g} (the radius if all n votes agree, each in its "
        f"own metric): {', '.join(ceilings)}. A larger radius needs a larger n."
    )
    return runs


nav.ensure_app()
st.title("Certify")
st.write(
    "DCERT (Cohen's CERTIFY) with each smoothing distribution: n0 noisy copies select the top class, n fresh "
    "ones bound its probability from below (Clopper-Pearson at level 1 - alpha), and the bound becomes a "
    "radius."
)
current = nav.model_and_image()
if current is not None:
    current_model, current_image = current
    x_in = resources.model_input(current_model, current_image)
    prof, why = choices.usable_profile(current_model, x_in.shape, current_image)
    if prof is None:
        st.info(f"DSmooth is unavailable: {why}.", icon=":material/info:")
        nav.link(nav.PROFILE, "Get a threat profile for DSmooth")
    chosen = settings(prof)
    if chosen:
        certify_view.machine_rate(current_model, chosen)
    if st.button("Certify", type="primary", disabled=not chosen, icon=":material/verified_user:"):
        submissions.certify(current_model, current_image, chosen, prof)
    last = state.get(state.CERTIFY)
    if last is not None:
        certify_view.show(current_model, current_image, x_in, last)
