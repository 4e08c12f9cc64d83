"""Page 4: what the three smoothing distributions look like, and how the base model votes under them."""

from __future__ import annotations

import functools

import streamlit as st

from dsmooth_core.noise import METHOD_CLASSES, make_noise, method_class
from dsmooth_core.settings import result_key
from dsmooth_lab_ui import choices, compute, figures, jobs, nav, resources, state, tasks
from dsmooth_lab_ui.images import signed_to_uint8, to_uint8

JOB = "votes"
SIGMA_CHOICES = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
DEFAULT_SIGMAS = [0.0, 0.1, 0.5, 1.0]


def methods_for(profile: state.ProfileChoice | None) -> list[str]:
    """The isotropic methods first, then those a threat profile shapes (when there is one)."""
    plain = [key for key, cls in METHOD_CLASSES.items() if not cls.needs_profile]
    shaped = [key for key, cls in METHOD_CLASSES.items() if cls.needs_profile and profile is not None]
    return plain + shaped


def noise_for(method: str, sigma: float, profile: state.ProfileChoice | None):
    if sigma == 0:
        return None
    return make_noise(method, sigma, profile.covariance if profile else None)


def sample_grids(x, methods, sigmas, profile, seed: int) -> None:
    noisy_rows, noise_rows = [], []
    for method in methods:
        noisy, raw = [], []
        for sigma in sigmas:
            eps = compute.noise_sample(noise_for(method, sigma, profile), tuple(x.shape), seed)
            noisy.append(to_uint8(x + eps))  # clipped to [0, 1] for display only
            raw.append(signed_to_uint8(eps, scale=3 * sigma if sigma > 0 else 1.0)[0])
        noisy_rows.append(noisy)
        noise_rows.append(raw)
    rows = [method_class(m).name for m in methods]
    cols = [f"sigma = {s:g}" for s in sigmas]
    st.plotly_chart(
        figures.image_grid(noisy_rows, row_titles=rows, col_titles=cols, title="Noisy images x + e", cell_px=150),
        key="noise_noisy_grid",
        width="stretch",
    )
    st.caption(
        "Noisy images are clipped to [0, 1] for display only: the smoothed classifier sees x + e unclipped. "
        "LSmooth uses Laplace noise with the same per-pixel variance as the Gaussians (scale = sigma / sqrt "
        "2). Same seed in every cell. Download as PNG with the camera icon in the chart's toolbar."
    )
    st.plotly_chart(
        figures.image_grid(noise_rows, row_titles=rows, col_titles=cols, title="Noise samples e", cell_px=150),
        key="noise_raw_grid",
        width="stretch",
    )
    st.caption(
        "Noise shown as 0.5 + e / (6 sigma): mid-grey is 0 and +-3 sigma reach white/black, so columns are "
        "comparable across methods. DSmooth's noise follows the attack's directions (structured), the others "
        "are independent per pixel."
    )


def votes_section(model, x, image, methods, sigmas, profile) -> None:
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
    key = resources.model_key(model)
    if st.button("Count the votes", type="primary", icon=":material/how_to_vote:"):
        noises = [noise_for(method, float(sigma), profile) for method in methods]
        runs = [
            (noise, result_key("votes", model.info, image.identity, noise, int(count), int(seed), int(batch)))
            for noise in noises
        ]
        record = {"model_key": key, "image_id": image.image_id, "sigma": sigma, "count": int(count)}
        jobs.start(
            JOB,
            "Counting votes",
            tuple(cache_key for _, cache_key in runs),
            functools.partial(tasks.votes, model, x, runs, int(count), int(batch), int(seed)),
            lambda results: state.put(state.NOISE_VOTES, {**record, "results": results}),
            batch=min(int(batch), int(count)),
            kept=jobs.METHODS_KEPT,
        )
    record = state.get(state.NOISE_VOTES)
    if not record or not record["results"]:
        st.caption("Press the button to draw noise, run the model on every noisy copy and count its votes.")
        return
    if record["model_key"] != key or record["image_id"] != image.image_id:
        st.warning("These votes are for another model or image; count again to update.", icon=":material/history:")
    results = record["results"]
    classes = model.info.class_names
    st.plotly_chart(
        figures.vote_histogram(
            {m: r["counts"] for m, r in results.items()},
            classes,
            title=f"Votes of the base model over {record['count']} draws at sigma = {record['sigma']:g}",
        ),
        key="votes_histogram",
        width="stretch",
    )
    st.plotly_chart(
        figures.heatmap_row(
            [r["variance_map"] for r in results.values()],
            list(results),
            colorbar_title="variance",
            title=f"Per-pixel noise energy (variance summed over channels, from {record['count']} draws)",
        ),
        key="votes_variance",
        width="stretch",
    )
    st.caption(
        "RandSmooth and LSmooth spread the same energy evenly over pixels (equal per-pixel variance); "
        "DSmooth concentrates it where the attack's perturbations vary most. The histogram's top class among "
        "the draws is what certification selects; its share bounds p_A. Charts download as PNG from their "
        "toolbars."
    )


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
        sample_grids(x_in, methods_for(prof), levels, prof, int(sample_seed))
        st.divider()
        votes_section(current_model, x_in, current_image, methods_for(prof), levels, prof)
