"""The Certify page's audit panel: attack each certificate inside its own region, as a background job.

What it can show: a perturbation inside the certified region that changes the smoothed prediction
refutes the certificate. What it cannot: finding nothing never proves a certificate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import streamlit as st
import torch

from dsmooth_core import Certificate, SmoothingNoise
from dsmooth_core.audit import AuditResult, AuditSettings
from dsmooth_core.noise import method_class
from dsmooth_core.seeds import derive_seed
from dsmooth_core.settings import result_key
from dsmooth_lab_ui import audit_figures, jobs, resources, state, tasks
from dsmooth_lab_ui.images import signed_to_uint8, to_uint8, upscale

JOB = "audit"
# The widgets' limits: at 50 draws and alpha 1e-9, PREDICT can still name a class at the Bonferroni level of
# any realistic number of candidates (below 2^49 alpha); fewer draws or a smaller alpha make audits blind.
MIN_N = 50
MIN_ALPHA = 1e-9
MAX_ALPHA = 0.5
EXPLAIN = (
    "The certificate is a lower bound on the smoothed classifier's robust radius. The audit runs PGD on "
    "the Monte Carlo soft smoothed classifier (average softmax over noise draws) inside a ball of the "
    "certificate's own metric, judges every candidate with PREDICT on fresh draws (family-wise level "
    "alpha), and bisects the budget: the smallest successful distance is an upper bound. A success inside "
    "R refutes the certificate. Finding nothing never proves it: a stronger attack might succeed."
)


@dataclass(frozen=True, eq=False)
class AuditView:
    """One audit with what it audited, so a stale one (other model, image or certificate) is not shown."""

    model_key: str
    image_id: str
    certificate: Certificate
    result: AuditResult


def _settings(batch_size: int) -> AuditSettings | None:
    c = st.columns(5)
    n = c[0].number_input("PREDICT draws per candidate", min_value=MIN_N, value=500, step=100, key="aud_n")
    alpha = c[1].number_input(
        "alpha (whole audit)", min_value=MIN_ALPHA, max_value=MAX_ALPHA, value=0.001, format="%.4g", key="aud_alpha"
    )
    draws = c[2].number_input("Noise draws per gradient", min_value=1, value=16, key="aud_draws")
    steps = c[3].number_input("PGD steps per budget", min_value=1, value=10, key="aud_steps")
    bisection = c[4].number_input("Bisection steps", min_value=0, value=5, key="aud_bisection")
    try:
        settings = AuditSettings(
            n=int(n),
            alpha=float(alpha),
            draws=int(draws),
            steps=int(steps),
            bisection_steps=int(bisection),
            batch_size=batch_size,
        )
    except ValueError as exc:
        st.error(str(exc), icon=":material/error:")
        return None
    reach = settings.reach()
    if not reach.able:  # the minimums above rule this out unless the bisection steps run to hundreds of thousands
        st.warning(f"This audit would be inconclusive: {reach.reason()}.", icon=":material/warning:")
    else:
        st.caption(f"PREDICT names a new class only when it wins at least {reach.share()} of a candidate.")
    return settings


def _run(model, x, record: state.CertifyRecord, noise: SmoothingNoise, settings: AuditSettings) -> None:
    """Start the audit of one certificate as a background job; its result lands in ``state.AUDIT``."""
    method = noise.name
    certificate = dict(record.results)[noise]
    seed = derive_seed(record.settings[noise.key].seed, 0, "audit")  # draws apart from the certificate's

    def deliver(result: AuditResult) -> None:
        audits: dict[str, AuditView] = dict(state.get(state.AUDIT) or {})
        audits[method] = AuditView(record.model_key, record.image_id, certificate, result)
        state.put(state.AUDIT, audits)

    jobs.start(
        JOB,
        f"Audit of {method}",
        result_key(record.model_key, record.image_id, noise, certificate, settings, seed),
        functools.partial(tasks.audit, model, x, noise, certificate, settings, seed),
        deliver,
        batch=settings.batch_size,
    )


def _show(view: AuditView, x: torch.Tensor, classes: tuple[str, ...]) -> None:
    result = view.result
    metric = method_class(result.method).metric_label
    bound = f"{result.empirical_bound:.4g}" if result.empirical_bound != float("inf") else "none found"
    summary = (
        f"**{result.method}**: certified R = {result.certified_radius:.4g}, empirical bound {bound} ({metric}); "
        f"{result.predict_calls} PREDICT calls, {result.seconds:.1f} s."
    )
    if result.inconclusive:
        st.warning(f"{summary} Inconclusive: the audit could not look. {result.reason}.", icon=":material/help:")
    elif result.violated:
        st.error(
            f"{summary} Violation: a perturbation of size {result.empirical_bound:.4g} < R changes the smoothed "
            f"prediction to {classes[result.new_prediction]}. The certificate is refuted (unless it was one of "
            "its own alpha failures).",
            icon=":material/gpp_bad:",
        )
    else:
        st.success(
            f"{summary} Consistent: nothing found inside R. This does not prove the certificate.",
            icon=":material/verified:",
        )
    left, right = st.columns([3, 2])
    left.plotly_chart(audit_figures.bounds_chart(result), key=f"audit_chart_{result.method}", width="stretch")
    if result.perturbation is not None:
        picture, gain = signed_to_uint8(result.perturbation)
        factor = max(1, 96 // x.shape[-1])
        right.image(
            [upscale(picture, factor), upscale(to_uint8(x + result.perturbation), factor)],
            caption=[f"perturbation (x{gain:.3g}, grey = 0)", f"x + perturbation: {classes[result.new_prediction]}"],
        )


def section(model, x: torch.Tensor, record: state.CertifyRecord) -> None:
    """'Audit these certificates': a button per certified method, and each method's last audit."""
    st.subheader("Audit these certificates")
    st.write(EXPLAIN)
    settings = _settings(max(s.batch for s in record.settings.values()))  # the certificates' batch
    certified = [noise for noise, cert in record.results if not cert.abstained]
    if not certified:
        st.info("No method certified this image, so there is nothing to audit.", icon=":material/info:")
    cols = st.columns(max(1, len(certified)))
    for col, noise in zip(cols, certified, strict=False):
        if col.button(f"Audit {noise.name}", key=f"audit_{noise.name}", disabled=settings is None):
            _run(model, x, record, noise, settings)
    audits: dict[str, AuditView] = st.session_state.get(state.AUDIT) or {}
    key = resources.model_key(model)
    for noise, current in record.results:
        view = audits.get(noise.name)
        if view is None or view.model_key != key or view.image_id != record.image_id or view.certificate != current:
            continue
        _show(view, x, model.info.class_names)
