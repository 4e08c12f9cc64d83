"""The Certify page's views of a finished certification: the certificates, the honest comparison of
the methods, the slice of their regions, the CSV download and the audit panel.

The page gathers the inputs and starts the job; this draws the :class:`~dsmooth_lab_ui.state.CertifyRecord`
it delivers, from the objects that hold the numbers (certificates, their noises, the settings).
"""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st
import torch

from dsmooth_core import SmoothingNoise, radius_ceiling
from dsmooth_core.backends.throughput import CERTIFY_EFFICIENCY, affordable_n
from dsmooth_core.settings import CertifySettings
from dsmooth_lab_ui import attack_outcome_view, audit_view, figures, forward, nav, reports, resources, state

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


AFFORDABLE_SECONDS = 5.0  # the wait the Certify page plans n for


def machine_rate(model: torch.nn.Module, runs: list[tuple[CertifySettings, SmoothingNoise]]) -> None:
    """Which forward certifies (and why a model stays on torch), this machine's measured rate, and the n
    it affords in about :data:`AFFORDABLE_SECONDS` for the chosen methods, with the ceiling that n allows."""
    fast = forward.prepared(model)
    if fast.fell_back:
        st.info(fast.note, icon=":material/info:")
    s = runs[0][0]
    measured = forward.rate(fast, s.batch)
    if measured is None:
        st.caption(f"Forward: {fast.name}. An uploaded model's rate is not measured: it runs only in its jobs.")
        return
    per_second, thread_count = measured
    draws = len(runs) * (s.n0 + s.n)
    expected = draws / (per_second * CERTIFY_EFFICIENCY)
    n = affordable_n(per_second, AFFORDABLE_SECONDS, len(runs), s.n0)
    methods = f"the {len(runs)} methods" if len(runs) > 1 else runs[0][1].name
    helpers = forward.spare_cores_lent(fast, thread_count)
    lent = f" and the idle time of {helpers} more core{'s' if helpers > 1 else ''}" if helpers else ""
    here = (
        f"Forward: {fast.name}, about {per_second:,.0f} images/s on this machine ({thread_count} thread"
        f"{'s' if thread_count > 1 else ''}{lent}, batch {min(s.batch, forward.RATE_BATCH_CAP)}): these settings "
        f"take about {expected:.1f} s."
    )
    if n == 0:
        st.caption(f"{here} Even n = 100 takes longer than {AFFORDABLE_SECONDS:g} s for {methods} here.")
        return
    ceilings = ", ".join(
        f"{noise.name} {radius_ceiling(noise, n, s.alpha):.3g} ({noise.metric_label})" for _, noise in runs
    )
    st.caption(
        f"{here} n = {n:,} certifies {methods} in about {AFFORDABLE_SECONDS:g} s, with a radius ceiling of "
        f"{ceilings} at alpha = {s.alpha:g}."
    )


def forward_line(record: state.CertifyRecord) -> None:
    """Which engine ran the certificates' forward, unobtrusively (its votes may differ from the other's by a few)."""
    st.caption(f"forward: {record.forward}")


def is_current(record: state.CertifyRecord, model: torch.nn.Module, image: state.ImageChoice) -> bool:
    """Whether the record was made with the current model (its identity) and image."""
    return record.model_key == resources.model_key(model) and record.image_id == image.image_id


@st.fragment
def region_slice(record: state.CertifyRecord, delta: torch.Tensor | None, shape: tuple[int, ...]) -> None:
    """The 2-D slice of the regions; its toggle redraws only this chart."""
    whole = st.toggle("Show the whole regions", key="cert_slice_whole", help="Off: zoom on the attack point.")
    fig, _ = reports.slice_figure(record.results, delta, shape, zoom=not whole)
    st.plotly_chart(fig, key="cert_slice", width="stretch")


def certificates(record: state.CertifyRecord, classes: tuple[str, ...]) -> list[dict]:
    """The certificates as a table and one line each; returns the table's rows."""
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
    return rows


def comparison(record: state.CertifyRecord, x: torch.Tensor) -> list[dict]:
    """The methods in shared terms, the attack against each region, and the two charts; returns the rows."""
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
    rows = reports.comparison_rows(record.results, delta, x.numel(), record.label)
    st.dataframe(pd.DataFrame(rows), hide_index=True, key="cert_comparison", column_config=COMPARISON_HELP)
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
        st.plotly_chart(figures.guarantee_bars(rows), key="cert_bars", width="stretch")
    with right:
        region_slice(record, delta, tuple(x.shape))
    st.caption(
        "Right: the plane through the image spanned by the attack perturbation and DSmooth's top "
        "eigen-direction (orthonormalised), same scale on both axes. DSmooth's Mahalanobis ball cuts it in "
        "an ellipse, the l2 ball in a disc, the l1 ball in a thin polygon (a dense direction has a large l1 "
        "norm). The attack point lies exactly in this plane. Download charts as PNG from their toolbars."
    )
    return rows


def results_table(record: state.CertifyRecord, rows: list[dict], comparison_rows: list[dict]) -> pd.DataFrame:
    """Every column of both tables, each method's settings, the profile and the model: the CSV's content."""
    table = pd.DataFrame(rows).merge(pd.DataFrame(comparison_rows), on="method", how="left")
    by_name = {noise.name: record.settings[noise.key] for noise, _ in record.results}
    for name in (f.name for f in dataclasses.fields(next(iter(by_name.values())))):
        table[f"setting {name}"] = [getattr(by_name[method], name) for method in table["method"]]
    if record.profile is not None:
        table["setting profile"] = record.profile
        table["setting profile_hash"] = record.profile_hash
    table["image"] = record.image_id
    table["model"] = record.model_name
    table["model identity"] = record.model_key
    table["forward"] = record.forward
    return table


def show(model: torch.nn.Module, image: state.ImageChoice, x: torch.Tensor, record: state.CertifyRecord) -> None:
    """The record's certificates, comparison, CSV and (for the current model and image) the audit panel."""
    current = is_current(record, model, image)
    if not current:
        st.warning(
            "These results are for another model or image than the current ones; certify again to update.",
            icon=":material/history:",
        )
    if not record.results:
        return
    rows = certificates(record, model.info.class_names)
    forward_line(record)
    compared = comparison(record, x)
    attack_outcome_view.section(record, model.info.class_names)
    st.download_button(
        "Download the results (CSV)",
        results_table(record, rows, compared).to_csv(index=False).encode(),
        file_name="dsmooth_certificates.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/download:",
    )
    if current:
        st.divider()
        audit_view.section(model, x, record)
