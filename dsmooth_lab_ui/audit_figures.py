"""The audit chart: a certificate's lower bound against the attack's upper bound, in the certificate's metric."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from dsmooth_core.audit import AuditResult
from dsmooth_core.noise import method_class

LOWER = "certified radius (lower bound)"
UPPER = "empirical bound (upper bound)"
SEARCHED = "searched up to, nothing found"


def bounds_chart(result: AuditResult) -> go.Figure:
    """One row: [0, R] certified, and the smallest distance at which the attack changed the prediction."""
    metric = method_class(result.method).metric_label
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=[result.certified_radius],
            y=[result.method],
            orientation="h",
            name=LOWER,
            marker_color="#2e7d32",
            hovertemplate=f"R = %{{x:.4g}} ({metric})<extra></extra>",
        )
    )
    found = math.isfinite(result.empirical_bound)
    where = result.empirical_bound if found else result.searched_up_to
    fig.add_trace(
        go.Scatter(
            x=[where],
            y=[result.method],
            mode="markers",
            name=UPPER if found else SEARCHED,
            marker={
                "symbol": "x" if found else "triangle-right",
                "size": 16,
                "color": "#c62828" if result.violated else "#1565c0",
            },
            hovertemplate=f"%{{x:.4g}} ({metric})<extra></extra>",
        )
    )
    upper = max(result.certified_radius, where) * 1.15
    fig.update_layout(
        title=f"{result.method}: {result.verdict} ({metric})",
        xaxis={"title": f"distance in the {metric} metric", "range": [0, upper]},
        height=220,
        margin={"l": 10, "r": 10, "t": 40, "b": 40},
        legend={"orientation": "h", "y": -0.45},
    )
    return fig
