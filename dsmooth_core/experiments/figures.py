"""Plotly charts of experiment analyses: groups or table rows in, a ``go.Figure`` out (no streamlit).

The CLI writes them to files and the Experiments page draws them, from the same functions. Every
radius axis says which metric it is in: a Mahalanobis radius is never shown as an l2 guarantee.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from dsmooth_core.experiments.analysis import Group, curve
from dsmooth_core.extras import APP, require
from dsmooth_core.noise import METHOD_CLASSES, method_class

if TYPE_CHECKING:
    import plotly.graph_objects as go

AXIS_TITLES = {
    "radius": "radius r, each method in its own metric: DSmooth Mahalanobis of St, RandSmooth l2, LSmooth l1",
    "l2_inscribed": "l2 radius r guaranteed in every direction (largest l2 ball inside each certified region)",
    "l1_radius": "l1 radius r (largest l1 ball inside each certified region)",
}
TITLES = {
    "radius": "Certified accuracy, each method in its own metric (paper's Fig. 1)",
    "l2_inscribed": "Certified accuracy in l2 (the l2 ball each certificate contains)",
    "l1_radius": "Certified accuracy in l1 (the l1 ball each certificate contains)",
}


def _plotly(module: str = "plotly.graph_objects") -> ModuleType:
    """plotly, imported on first use: ``import dsmooth_core`` does not need it (the ``[app]`` extra)."""
    return require(module, APP, "experiment charts")


def _styles(groups: Sequence[Group]) -> list[tuple[str, str]]:
    """(colour, dash) per group: one colour per method when each method has one curve, else per curve."""
    if len({g.method for g in groups}) == len(groups):
        return [(method_class(g.method).color, "solid") for g in groups]
    palette = _plotly("plotly.colors").qualitative.Plotly
    return [(palette[i % len(palette)], method_class(g.method).dash) for i, g in enumerate(groups)]


def accuracy_figure(
    groups: Sequence[Group], field: str = "radius", *, gamma: float | None = None, title: str | None = None
) -> go.Figure:
    """Certified accuracy against radius (exact step curves), with the 1 - gamma lower bound dotted."""
    go = _plotly()
    fig = go.Figure()
    for group, (colour, dash) in zip(groups, _styles(groups), strict=True):
        points = curve(group, field, gamma)
        x = [p["radius"] for p in points] + [points[-1]["radius"]]
        name = f"{group.label} ({group.size} images)"
        fig.add_trace(
            go.Scatter(
                x=x,
                y=[p["certified_accuracy"] for p in points] + [0.0],
                mode="lines",
                line={"color": colour, "dash": dash, "shape": "vh", "width": 2},
                name=name,
                legendgroup=group.label,
            )
        )
        if gamma is not None:
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=[p["lower_bound"] for p in points] + [0.0],
                    mode="lines",
                    line={"color": colour, "dash": "dot", "shape": "vh", "width": 1},
                    opacity=0.6,
                    name=f"{group.label}: lower bound, prob. ≥ {1 - gamma:g}",
                    legendgroup=group.label,
                )
            )
    fig.update_layout(
        title=title or TITLES.get(field, "Certified accuracy"),
        xaxis_title=AXIS_TITLES.get(field, field),
        yaxis_title="certified accuracy",
        yaxis_range=[0, 1.02],
        legend={"orientation": "h", "yanchor": "top", "y": -0.2},
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
        height=420 + 22 * len(groups),
    )
    return fig


def ablation_figure(groups: Sequence[Group], param: str, *, gamma: float | None = None) -> go.Figure:
    """Certified accuracy (own metric) of the groups that differ in ``param`` (the paper's Fig. 3-5)."""
    names = {"k": "the rank k of DSmooth's covariance", "n": "the number n of samples", "alpha": "alpha"}
    return accuracy_figure(groups, gamma=gamma, title=f"Ablation over {names.get(param, param)}")


def _bar_colours(rows: Sequence[dict]) -> list[str]:
    by_name = {cls.name: cls.color for cls in METHOD_CLASSES.values()}
    return [by_name.get(row["method"], "#7f7f7f") for row in rows]


def attack_figure(rows: Sequence[dict]) -> go.Figure:
    """Share of images certified against the attack, per configuration (lower bound as error bar)."""
    go = _plotly()
    values = [row["certified_against_attack"] for row in rows]
    error = None
    if rows and "lower_bound" in rows[0]:
        below = [v - row["lower_bound"] for v, row in zip(values, rows, strict=True)]
        error = {"type": "data", "symmetric": False, "array": [0] * len(rows), "arrayminus": below}
    fig = go.Figure(
        go.Bar(
            x=[row["label"] for row in rows],
            y=values,
            marker_color=_bar_colours(rows),
            text=[f"{v:.0%}" for v in values],
            textposition="auto",
            error_y=error,
            customdata=[[row["accuracy"], row["attack_success_rate"]] for row in rows],
            hovertemplate="%{x}<br>certified against the attack %{y:.1%}<br>accuracy %{customdata[0]:.1%}"
            "<br>attack success %{customdata[1]:.1%}<extra></extra>",
            name="certified against the attack",
        )
    )
    fig.update_layout(
        title="Certified against the attack: true label, and the attack's perturbation inside the certified region",
        yaxis_title="fraction of images",
        yaxis_range=[0, 1.05],
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
    )
    return fig


def time_figure(rows: Sequence[dict]) -> go.Figure:
    """Mean seconds to certify one image per configuration, with the standard deviation (Tables 1-6)."""
    go = _plotly()
    fig = go.Figure(
        go.Bar(
            x=[row["label"] for row in rows],
            y=[row["mean_seconds"] for row in rows],
            error_y={"type": "data", "array": [row["std_seconds"] for row in rows]},
            marker_color=_bar_colours(rows),
            name="seconds per image",
        )
    )
    fig.update_layout(
        title="Time to certify one image (mean ± std)",
        yaxis_title="seconds",
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
    )
    return fig
