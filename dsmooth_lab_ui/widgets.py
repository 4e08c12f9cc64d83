"""Input widgets shared by several pages, with validation that explains bad values."""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from dsmooth_core.attacks import PRESETS, AttackConfig
from dsmooth_core.attacks.support import WHOLE_IMAGE

CUSTOM = "custom"
FGSM_CHOICES = ("l2", "linf", "none")
_FIELDS = ("eps_inf", "n_queries", "p_init", "fgsm", "eps_fgsm", "project_linf")


def _widget_values(config: AttackConfig) -> dict[str, Any]:
    """Each field's widget value; ``support`` (which pixels move) has no widget and follows the preset."""
    values = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    values["fgsm"] = values["fgsm"] or "none"
    return values


def _apply_preset(prefix: str) -> None:
    name = st.session_state[f"{prefix}preset"]
    if name in PRESETS:
        for field, value in _widget_values(PRESETS[name]).items():
            st.session_state[f"{prefix}{field}"] = value


def _mark_custom(prefix: str) -> None:
    st.session_state[f"{prefix}preset"] = CUSTOM


def attack_settings(prefix: str, default_preset: str, overrides: dict[str, Any] | None = None) -> AttackConfig | None:
    """Every AttackConfig parameter, with the presets; returns ``None`` (and says why) when invalid."""
    if f"{prefix}preset" not in st.session_state:
        st.session_state[f"{prefix}preset"] = CUSTOM if overrides else default_preset
        start = {**_widget_values(PRESETS[default_preset]), **(overrides or {})}
        for field, value in start.items():
            st.session_state.setdefault(f"{prefix}{field}", value)
    persist: Any = "session"
    st.selectbox(
        "Preset",
        [*PRESETS, CUSTOM],
        key=f"{prefix}preset",
        on_change=_apply_preset,
        args=(prefix,),
        persist_state=persist,
        help="paper: eps_inf 0.5, 5000 queries, l2 FGSM 0.5 (Sec. 5 of the paper; very large for [0,1] "
        "images). conventional: eps_inf 8/255, 1000 queries, the l2 FGSM step projected back into the 8/255 "
        "ball. reachable: eps_inf 2/255 (the whole ball lies within l2 0.43, inside the radii certificates reach "
        "at sigma 0.25-0.5), the FGSM step projected back into it. patch: a sticker, the 8 x 8 bottom-right "
        "corner only, at 16/255. lowfreq: 4 x 4 pixel blocks that move together, at 3/255. nonuniform: the "
        "patch plus 2/255 everywhere else. The structured threats share their directions across images, "
        "which a threat profile needs (docs/REPRODUCTION.md).",
    )
    common: dict[str, Any] = {"on_change": _mark_custom, "args": (prefix,), "persist_state": persist}
    c1, c2, c3 = st.columns(3)
    eps_inf = c1.number_input(
        "Square eps_inf (l_inf radius, [0,1] pixels)",
        key=f"{prefix}eps_inf",
        step=1 / 255,
        format="%.4f",
        help="8/255 = 0.0314 is the usual CIFAR-10 budget.",
        **common,
    )
    n_queries = c2.number_input(
        "Square queries (budget per image)", key=f"{prefix}n_queries", min_value=1, step=100, **common
    )
    p_init = c3.number_input(
        "Square p_init (initial fraction of pixels per square)",
        key=f"{prefix}p_init",
        step=0.01,
        format="%.3f",
        **common,
    )
    c4, c5, c6 = st.columns(3)
    fgsm = c4.selectbox(
        "FGSM step after Square",
        FGSM_CHOICES,
        key=f"{prefix}fgsm",
        help="l2: the paper's fast gradient method",
        **common,
    )
    eps_fgsm = c5.number_input(
        "FGSM eps (l2 length or l_inf size of the step)",
        key=f"{prefix}eps_fgsm",
        step=0.05,
        format="%.4f",
        disabled=fgsm == "none",
        **common,
    )
    project = c6.checkbox(
        "Project the result back into the eps_inf ball",
        key=f"{prefix}project_linf",
        help="Keeps the whole threat, FGSM included, an l_inf threat of radius eps_inf.",
        **common,
    )
    support = st.session_state.get(f"{prefix}support", WHOLE_IMAGE)
    moves = "" if support.whole_image else f" The threat moves only {support.describe()} (from the preset)."
    st.caption(f"eps_inf = {eps_inf:.4f} = {eps_inf * 255:.1f}/255.{moves}")
    try:
        return AttackConfig(
            eps_inf=float(eps_inf),
            n_queries=int(n_queries),
            p_init=float(p_init),
            fgsm=None if fgsm == "none" else fgsm,
            eps_fgsm=float(eps_fgsm),
            project_linf=bool(project),
            support=support,
        )
    except ValueError as exc:
        st.error(f"Invalid attack settings: {exc}", icon=":material/error:")
        return None


def config_items(config: AttackConfig) -> tuple[tuple[str, Any], ...]:
    """A hashable, small cache key for a config."""
    return tuple(sorted(config.to_dict().items()))


def check_certify_inputs(sigma: float | None, n0: int | None, n: int | None, alpha: float | None) -> list[str]:
    """Messages for every bad certification input (empty when all is well)."""
    problems = []
    if sigma is None or not sigma > 0:
        problems.append(f"sigma must be a positive number (got {sigma}).")
    if alpha is None or not 0 < alpha < 1:
        problems.append(f"alpha must lie strictly between 0 and 1 (got {alpha}).")
    if n0 is None or n0 < 1:
        problems.append(f"n0 must be at least 1 (got {n0}).")
    if n is None or n < 1:
        problems.append(f"n must be at least 1 (got {n}).")
    if n0 is not None and n is not None and n0 > n:
        problems.append(
            f"n0 ({n0}) is larger than n ({n}): n0 only selects the top class, n bounds its probability; use n0 <= n."
        )
    return problems
