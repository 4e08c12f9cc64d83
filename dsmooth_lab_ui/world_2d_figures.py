"""Plotly figures of the 2-D world: regions as heatmaps over the unit square, certificates as their shapes.

Plain data in, a ``go.Figure`` out (no streamlit, no model calls). Every radius shown carries its metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from dsmooth_lab_ui.world_2d import Grid, NearestOther

CLASS_COLORS = ("#4c78a8", "#f58518")
# P(class 1) from 0 to 1: class 0's colour, white at the tie 1/2, class 1's colour
_SHARE_SCALE = [[0.0, "#9ecae9"], [0.5, "#ffffff"], [1.0, "#ffbf79"]]
# Spacing of the invisible click targets, in plane units. Each target is an SVG node that Chromium
# redraws with the chart: 676 of them on each of the four charts took most of their drawing time
# (benchmarks/bench_world.py), so only the base chart carries them.
CLICK_STEP = 0.04
_WIDTH, _HEIGHT = 400, 440


@dataclass(frozen=True)
class CertificateShape:
    """What a smoothed chart draws for the chosen point's certificate."""

    outline: np.ndarray | None  # closed boundary (K, 2); None when the method abstains
    color: str
    label: str  # the radius with its metric, or why there is none
    nearest: NearestOther | None


def _click_targets() -> go.Scatter:
    """A lattice of invisible markers: a click on a chart selects the nearest one (heatmaps send no selection)."""
    axis = np.arange(0, 1 + CLICK_STEP / 2, CLICK_STEP)
    u, v = np.meshgrid(axis, axis)
    hidden = {"marker": {"opacity": 0}}
    return go.Scatter(
        x=u.ravel().round(4),
        y=v.ravel().round(4),
        mode="markers",
        marker={"size": 9, "opacity": 0, "color": "#000000"},
        selected=hidden,
        unselected=hidden,
        hovertemplate="click to certify (%{x:.3f}, %{y:.3f})<extra></extra>",
        showlegend=False,
        name="click",
    )


def region_chart(title: str, grid: Grid, shares: np.ndarray, clickable: bool = False) -> go.Figure:
    """The region map: P(class 1) per cell (0/1 for the base classifier), white at the tie; ``clickable``
    adds the click targets."""
    axis = {"range": [0, 1], "showgrid": False, "zeroline": False}
    heatmap = go.Heatmap(
        z=shares,
        x=grid.axis,
        y=grid.axis,
        zmin=0,
        zmax=1,
        colorscale=_SHARE_SCALE,
        showscale=False,
        hoverinfo="skip",
    )
    layout = {
        "title": {"text": title, "font": {"size": 14}, "x": 0.02, "xanchor": "left"},
        "width": _WIDTH,
        "height": _HEIGHT,
        "margin": {"l": 30, "r": 10, "t": 40, "b": 20},
        "clickmode": "event+select",
        "dragmode": False,
        "legend": {"orientation": "h", "y": -0.12, "font": {"size": 11}},
        "xaxis": {**axis, "constrain": "domain"},
        "yaxis": {**axis, "scaleanchor": "x", "scaleratio": 1},
    }
    # one constructor call: plotly validates the figure once instead of once per update
    fig = go.Figure(data=[heatmap, _click_targets()] if clickable else [heatmap], layout=layout)
    return fig


def add_data(fig: go.Figure, points: np.ndarray, labels: np.ndarray) -> None:
    """The training points, coloured by class."""
    for label, color in enumerate(CLASS_COLORS):
        mine = points[labels == label]
        fig.add_trace(
            go.Scatter(
                x=mine[:, 0],
                y=mine[:, 1],
                mode="markers",
                marker={"size": 5, "color": color, "line": {"width": 0.5, "color": "#ffffff"}},
                name=f"class {label}",
                hoverinfo="skip",
            )
        )


def add_point(fig: go.Figure, point: tuple[float, float]) -> None:
    fig.add_trace(
        go.Scatter(
            x=[point[0]],
            y=[point[1]],
            mode="markers",
            marker={"size": 10, "color": "#000000", "symbol": "x"},
            name="chosen point",
            hoverinfo="skip",
        )
    )


def add_cloud(fig: go.Figure, cloud: np.ndarray, name: str) -> None:
    """Points around the chosen one, e.g. the attack's perturbations moved there."""
    fig.add_trace(
        go.Scatter(
            x=cloud[:, 0],
            y=cloud[:, 1],
            mode="markers",
            marker={"size": 3, "color": "#555555", "opacity": 0.6},
            name=name,
            hoverinfo="skip",
        )
    )


def add_certificate(fig: go.Figure, point: tuple[float, float], shape: CertificateShape) -> None:
    """The certified region's exact shape and a dotted segment to the nearest cell of the other class."""
    if shape.outline is not None:
        fig.add_trace(
            go.Scatter(
                x=shape.outline[:, 0],
                y=shape.outline[:, 1],
                mode="lines",
                line={"color": shape.color, "width": 2.5},
                fill="toself",
                fillcolor="rgba(0,0,0,0.06)",
                name=shape.label,
                hoverinfo="skip",
            )
        )
    if shape.nearest is not None:
        (u, v), distance = shape.nearest.point, shape.nearest.distance
        fig.add_trace(
            go.Scatter(
                x=[point[0], u],
                y=[point[1], v],
                mode="lines+markers",
                line={"color": "#000000", "width": 1, "dash": "dot"},
                marker={"size": [0, 8], "color": "#000000", "symbol": "diamond-open"},
                name=f"nearest other class: {distance:.3f}",
                hoverinfo="skip",
            )
        )
