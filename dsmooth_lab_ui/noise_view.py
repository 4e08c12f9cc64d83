"""The Noise explorer's views: noisy images and noise samples per method and sigma, and the vote counts.

Why a module: the page gathers the noise levels, seeds and draw counts and submits the vote job;
the grids and charts are built here from the noise objects and the job's record.
"""

from __future__ import annotations

import streamlit as st
import torch

from dsmooth_core import SmoothingNoise
from dsmooth_core.noise import METHOD_CLASSES, make_noise, method_class
from dsmooth_lab_ui import compute, figures, resources, state
from dsmooth_lab_ui.images import signed_to_uint8, to_uint8

# Noise samples are drawn around mid-grey with +-this many sigma reaching white/black, one scale for
# every method so the columns compare.
NOISE_SPAN_SIGMAS = 3.0


def methods_for(profile: state.ProfileChoice | None) -> list[str]:
    """The isotropic methods first, then those a threat profile shapes (when there is one)."""
    plain = [key for key, cls in METHOD_CLASSES.items() if not cls.needs_profile]
    shaped = [key for key, cls in METHOD_CLASSES.items() if cls.needs_profile and profile is not None]
    return plain + shaped


def noise_for(method: str, sigma: float, profile: state.ProfileChoice | None) -> SmoothingNoise | None:
    """The method's noise at ``sigma``, or None for sigma = 0 (the clean image)."""
    if sigma == 0:
        return None
    return make_noise(method, sigma, profile.covariance if profile else None)


def sample_grids(
    x: torch.Tensor, methods: list[str], sigmas: list[float], profile: state.ProfileChoice | None, seed: int
) -> None:
    """One noisy image and one noise sample per method and sigma, all from the same seed."""
    noisy_rows, noise_rows = [], []
    for method in methods:
        noisy, raw = [], []
        for sigma in sigmas:
            eps = compute.noise_sample(noise_for(method, sigma, profile), tuple(x.shape), seed)
            noisy.append(to_uint8(x + eps))  # clipped to [0, 1] for display only
            raw.append(signed_to_uint8(eps, scale=NOISE_SPAN_SIGMAS * sigma if sigma > 0 else 1.0)[0])
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
        f"Noise shown as 0.5 + e / ({2 * NOISE_SPAN_SIGMAS:g} sigma): mid-grey is 0 and +-{NOISE_SPAN_SIGMAS:g} "
        "sigma reach white/black, so columns are comparable across methods. DSmooth's noise follows the "
        "attack's directions (structured), the others are independent per pixel."
    )


def votes_view(model, image: state.ImageChoice) -> None:
    """The last vote count: its histogram per method and each noise's per-pixel energy."""
    key = resources.model_key(model)
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
