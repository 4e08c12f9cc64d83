"""Page 4: what the three smoothing distributions look like, and how the base model votes under them."""

from __future__ import annotations

import streamlit as st

from dsmooth_lab_ui import choices, nav, noise_view, resources, submissions

SIGMA_CHOICES = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
DEFAULT_SIGMAS = [0.0, 0.1, 0.5, 1.0]


def votes_section(model, image, methods, sigmas, profile) -> None:
    st.subheader("How the base model votes under each noise")
    positive = [s for s in sigmas if s > 0] or [0.25]
    c1, c2, c3, c4 = st.columns(4)
    if st.session_state.get("votes_sigma") not in positive:
        st.session_state["votes_sigma"] = positive[min(1, len(positive) - 1)]
    sigma = c1.selectbox("sigma", positive, key="votes_sigma")
    count = c2.number_input(
        "Noise draws",
        min_value=10,
        max_value=100_000,
        value=200,
        step=50,
        key="votes_count",
        persist_state="session",
    )
    batch = c3.number_input("Batch size", min_value=1, value=100, key="votes_batch", persist_state="session")
    seed = c4.number_input("Seed", min_value=0, value=0, key="votes_seed", persist_state="session")
    if st.button("Count the votes", type="primary", icon=":material/how_to_vote:"):
        noises = [noise_view.noise_for(method, float(sigma), profile) for method in methods]
        submissions.votes(model, image, noises, sigma, int(count), int(batch), int(seed))
    noise_view.votes_view(model, image)


nav.ensure_app()
st.title("Noise explorer")
st.write(
    "The three smoothing distributions at several noise levels (the paper's Fig. 6/7): RandSmooth N(0, "
    "sigma^2 I), LSmooth iid Laplace with matched variance, DSmooth N(0, sigma^2 St)."
)
current = nav.model_and_image()
if current is not None:
    current_model, current_image = current
    x_in = resources.model_input(current_model, current_image)
    prof, why = choices.usable_profile(current_model, x_in.shape)
    if prof is None:
        st.info(f"DSmooth is left out: {why}.", icon=":material/info:")
        nav.link(nav.PROFILE, "Get a threat profile for DSmooth")
    c1, c2 = st.columns([3, 1])
    levels = c1.multiselect(
        "Noise levels sigma (per-pixel standard deviation, [0,1] pixel units)",
        SIGMA_CHOICES,
        default=DEFAULT_SIGMAS,
        key="noise_sigmas",
        persist_state="session",
    )
    sample_seed = c2.number_input("Sample seed", min_value=0, value=0, key="noise_seed", persist_state="session")
    levels = sorted(levels)
    if not levels:
        st.error("Choose at least one noise level.", icon=":material/error:")
    else:
        noise_view.sample_grids(x_in, noise_view.methods_for(prof), levels, prof, int(sample_seed))
        st.divider()
        votes_section(current_model, current_image, noise_view.methods_for(prof), levels, prof)
