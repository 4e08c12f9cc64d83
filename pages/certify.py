"""Page 5: certify the image with DSmooth, RandSmooth and LSmooth, and compare them honestly."""

from __future__ import annotations

import functools

import pandas as pd
import streamlit as st
import torch

from dsmooth_core import SmoothingNoise, radius_ceiling
from dsmooth_core.noise import METHOD_CLASSES, make_noise
from dsmooth_lab_ui import audit_view, choices, figures, jobs, nav, reports, resources, state, tasks, widgets

JOB = "certify"
KEYS = {cls.name: key for key, cls in METHOD_CLASSES.items()}  # the multiselect shows display names
GPU = torch.cuda.is_available()
TABLE_COLUMNS = (  # shown on screen; the CSV has every column (settings included)
    "method",
    "prediction",
    "true label",
    "correct",
    "p_lower",
    "votes for top class (of n)",
    "radius R",
    "radius metric",
    "radius ceiling (same metric)",
    "seconds",
)
COMPARISON_HELP = {
    "R (own metric)": st.column_config.NumberColumn(format="%.4g", help="The certified radius in the method's metric"),
    "l2 radius in every direction": st.column_config.NumberColumn(
        format="%.4g", help="Largest l2 ball inside the certified region"
    ),
    "l1 radius": st.column_config.NumberColumn(format="%.4g", help="Largest l1 ball inside the certified region"),
    "l_inf radius (lower bound)": st.column_config.NumberColumn(
        format="%.4g", help="An l_inf ball of this radius lies inside the region"
    ),
    "equal-volume l2 radius (size only)": st.column_config.NumberColumn(
        format="%.4g",
        help="Radius of the l2 ball with the region's volume: compares sizes, guarantees nothing",
    ),
    "attack size (own metric)": st.column_config.NumberColumn(
        format="%.4g", help="Size of this image's Square + FGSM perturbation in the method's metric"
    ),
    "attack inside region": st.column_config.CheckboxColumn(help="attack size < R"),
    "certified against the attack": st.column_config.CheckboxColumn(
        help="True label certified AND the attack perturbation inside the region"
    ),
}


def settings(profile) -> tuple[list[SmoothingNoise], dict | None]:
    """The noises chosen (built once) and the run's numbers, or ``None`` when an input is refused."""
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
    problems = widgets.check_certify_inputs(sigma, n0, n, alpha)
    for problem in problems:
        st.error(problem, icon=":material/error:")
    if not methods:
        st.error("Choose at least one method.", icon=":material/error:")
    if problems or not methods:
        return [], None
    values = {
        "sigma": float(sigma),
        "n0": int(n0),
        "n": int(n),
        "alpha": float(alpha),
        "batch": int(batch),
        "seed": int(seed),
    }
    noises = [make_noise(KEYS[m], values["sigma"], profile.covariance if profile else None) for m in methods]
    ceilings = [
        f"{noise.name} {radius_ceiling(noise, values['n'], values['alpha']):.3g} ({noise.metric_label})"
        for noise in noises
    ]

    st.caption(
        f"Radius ceiling for n = {values['n']:,} and alpha = {values['alpha']:g} (the radius if all n votes "
        f"agree, each in its own metric): {', '.join(ceilings)}. A larger radius needs a larger n."
    )
    return noises, values


def run(model, image, x, noises: list[SmoothingNoise], values: dict, profile) -> None:
    key = resources.model_key(model)
    settings_used = dict(values)
    if profile is not None:
        settings_used = {**values, "profile": profile.describe(), "profile_hash": profile.content_hash[:16]}
    v = values
    runs = [
        (noise, (key, image.image_id, noise.identity, v["n0"], v["n"], v["alpha"], v["batch"], v["seed"]))
        for noise in noises
    ]
    label = resources.effective_label(model, image)

    def deliver(results: list) -> None:
        record = state.CertifyRecord(model_key=key, image_id=image.image_id, settings=settings_used, label=label)
        record.results.extend(results)
        state.put(state.CERTIFY, record)

    jobs.start(
        JOB,
        "Certification",
        tuple(cache_key for _, cache_key in runs),
        functools.partial(tasks.certificates, model, x, runs, v["n0"], v["n"], v["alpha"], v["batch"], v["seed"]),
        deliver,
        batch=min(v["batch"], v["n"]),
        kept=jobs.METHODS_KEPT,
    )


@st.fragment
def region_slice(record: state.CertifyRecord, delta, shape: tuple[int, ...]) -> None:
    """The 2-D slice of the regions; its toggle redraws only this chart."""
    whole = st.toggle("Show the whole regions", key="cert_slice_whole", help="Off: zoom on the attack point.")
    fig, _ = reports.slice_figure(record.results, delta, shape, zoom=not whole)
    st.plotly_chart(fig, key="cert_slice", width="stretch")


def show(model, image, x, record: state.CertifyRecord) -> None:
    if record.model_key != resources.model_key(model) or record.image_id != image.image_id:
        st.warning(
            "These results are for another model or image than the current ones; certify again to update.",
            icon=":material/history:",
        )
    if not record.results:
        return
    classes = model.info.class_names
    st.subheader("Certificates")
    rows = reports.result_rows(record.results, classes, record.label)
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="cert_table", column_order=TABLE_COLUMNS)
    st.caption(
        "Each radius R is in its method's own metric: l2 for RandSmooth, l1 for LSmooth, the Mahalanobis "
        "distance of St for DSmooth. ABSTAIN means p_lower <= 1/2: no class could be certified at this "
        "alpha. The radius ceiling is the largest radius n draws can certify at this alpha."
    )
    for row in rows:
        verdict = "abstains" if row["prediction"] == "ABSTAIN" else f"certifies **{row['prediction']}**"
        st.markdown(
            f"- **{row['method']}** {verdict}: p_lower = {row['p_lower']:.4f}, R = {row['radius R']:.4g} "
            f"({row['radius metric']}), ceiling {row['radius ceiling (same metric)']:.4g}, "
            f"{row['seconds']:.2f} s"
        )

    attack = state.get(state.ATTACK)
    delta = None
    if attack is not None and attack.model_key == record.model_key and attack.image_id == record.image_id:
        delta = attack.perturbation
    st.subheader("Comparing the methods honestly")
    st.write(
        "The radii above live in different metrics, so they cannot be compared directly. The table sets them "
        "in shared terms; the attack columns check whether the actual Square + FGSM perturbation of this "
        "image lies inside each certified region (||d||_2 < R, ||d||_1 < R, Mahalanobis(d) < R)."
    )
    comparison = reports.comparison_rows(record.results, delta, x.numel(), record.label)
    st.dataframe(pd.DataFrame(comparison), hide_index=True, key="cert_comparison", column_config=COMPARISON_HELP)
    if delta is None:
        st.info("Run the attack on this image to see whether its perturbation lies inside each region.")
        nav.link(nav.ATTACK)
    st.caption(
        "l2 radius in every direction: R for RandSmooth, R / sqrt(d) for LSmooth (||d||_1 <= sqrt(d) "
        "||d||_2), R sqrt(mu_min) for DSmooth. l1 radius: exact for all three (DSmooth: R / sqrt(max_i "
        "(St^-1)_ii)). The equal-volume l2 radius compares region sizes only (DSmooth's equals R when St is "
        "det-normalized, det St = 1, and is R det(St)^(1/(2d)) < R when it is trace-normalized); it is not a "
        "guarantee in any direction."
    )
    left, right = st.columns(2)
    with left:
        st.plotly_chart(figures.guarantee_bars(comparison), key="cert_bars", width="stretch")
    with right:
        region_slice(record, delta, tuple(x.shape))
    st.caption(
        "Right: the plane through the image spanned by the attack perturbation and DSmooth's top "
        "eigen-direction (orthonormalised), same scale on both axes. DSmooth's Mahalanobis ball cuts it in "
        "an ellipse, the l2 ball in a disc, the l1 ball in a thin polygon (a dense direction has a large l1 "
        "norm). The attack point lies exactly in this plane. Download charts as PNG from their toolbars."
    )
    table = pd.DataFrame(rows).merge(pd.DataFrame(comparison), on="method", how="left")
    for name, value in record.settings.items():
        table[f"setting {name}"] = value
    table["image"] = image.image_id if record.image_id == image.image_id else record.image_id
    table["model"] = record.model_key
    st.download_button(
        "Download the results (CSV)",
        table.to_csv(index=False).encode(),
        file_name="dsmooth_certificates.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
    )
    if record.model_key == resources.model_key(model) and record.image_id == image.image_id:
        st.divider()
        audit_view.section(model, x, record)


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
    chosen, values = settings(prof)
    if st.button("Certify", type="primary", disabled=values is None, icon=":material/verified_user:"):
        run(current_model, current_image, x_in, chosen, values, prof)
    last = state.get(state.CERTIFY)
    if last is not None:
        show(current_model, current_image, x_in, last)
