"""Plotly figure builders: plain data in, a ``go.Figure`` out (no streamlit, no model calls).

Images are embedded as PNG data URIs (small next to JSON pixel lists, crisp when upscaled).
Every radius a chart shows carries its metric in the trace name or axis title.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from PIL import Image
from plotly.subplots import make_subplots

from dsmooth_core.noise import METHOD_CLASSES
from dsmooth_lab_ui.images import upscale

_METHOD_COLORS = {cls.name: cls.color for cls in METHOD_CLASSES.values()}  # by display name
_OTHER_COLOR = "#7f7f7f"
_SMALL = 96  # images smaller than this are enlarged (nearest neighbour) before embedding


def png_data_uri(image: np.ndarray) -> str:
    """An (H,W,3) uint8 array as a ``data:image/png;base64`` URI."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _crisp(image: np.ndarray) -> np.ndarray:
    size = max(image.shape[0], image.shape[1])
    return upscale(image, max(1, _SMALL // size)) if size < _SMALL else image


def _hide_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)


def probability_bar(
    class_names: Sequence[str],
    probabilities: Sequence[float],
    *,
    true_label: int | None = None,
    top: int = 10,
    title: str = "Class probabilities of the base model",
) -> go.Figure:
    """Horizontal bars of the ``top`` most probable classes, highest on top; the true class marked."""
    probs = np.asarray(probabilities, dtype=float)
    order = np.argsort(-probs)[: min(top, len(probs))]
    labels = [class_names[i] + (" (true)" if i == true_label else "") for i in order]
    colors = ["#2ca02c" if i == true_label else "#1f77b4" for i in order]
    fig = go.Figure(
        go.Bar(
            x=probs[order],
            y=labels,
            orientation="h",
            marker_color=colors,
            text=[f"{p:.1%}" for p in probs[order]],
            textposition="auto",
            name="softmax probability",
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title="softmax probability",
        xaxis_range=[0, 1],
        yaxis_autorange="reversed",
        height=120 + 28 * len(order),
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
    )
    return fig


def image_grid(
    images: Sequence[Sequence[np.ndarray | None]],
    *,
    row_titles: Sequence[str] | None = None,
    col_titles: Sequence[str] | None = None,
    title: str | None = None,
    cell_px: int = 150,
) -> go.Figure:
    """A rows x cols grid of (H,W,3) uint8 images (``None`` leaves a cell empty)."""
    rows = len(images)
    cols = max(len(r) for r in images) if rows else 0
    fig = make_subplots(
        rows=max(rows, 1),
        cols=max(cols, 1),
        row_titles=list(row_titles) if row_titles else None,
        column_titles=list(col_titles) if col_titles else None,
        horizontal_spacing=0.02,
        vertical_spacing=0.04,
    )
    for r, row in enumerate(images, start=1):
        for c, image in enumerate(row, start=1):
            if image is None:
                continue
            shown = _crisp(image)
            fig.add_trace(go.Image(source=png_data_uri(shown), hoverinfo="skip"), row=r, col=c)
    _hide_axes(fig)
    extra_lines = max((t.count("<br>") for t in col_titles or []), default=0)
    top = 40 + (30 if title else 0) + 18 * extra_lines
    fig.update_layout(
        title=title,
        height=20 + top + cell_px * max(rows, 1),
        margin={"l": 10, "r": 40, "t": top, "b": 10},
    )
    return fig


def image_strip(images: Sequence[np.ndarray], titles: Sequence[str], *, title: str | None = None) -> go.Figure:
    """One row of images with a title above each."""
    return image_grid([list(images)], col_titles=titles, title=title, cell_px=220)


def heatmap_row(
    maps: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    colorbar_title: str,
    title: str | None = None,
) -> go.Figure:
    """Side-by-side heat maps (H,W) on one shared colour scale."""
    zmax = max(float(np.max(m)) for m in maps) if maps else 1.0
    fig = make_subplots(rows=1, cols=max(len(maps), 1), subplot_titles=list(titles), horizontal_spacing=0.03)
    for i, m in enumerate(maps, start=1):
        fig.add_trace(
            go.Heatmap(
                z=np.asarray(m, dtype=float),
                zmin=0.0,
                zmax=zmax if zmax > 0 else 1.0,
                colorscale="Viridis",
                showscale=i == len(maps),
                colorbar={"title": {"text": colorbar_title}},
                hovertemplate="row %{y}, col %{x}: %{z:.4g}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{i if i > 1 else ''}", row=1, col=i)
    _hide_axes(fig)
    fig.update_layout(title=title, height=320, margin={"l": 10, "r": 10, "t": 70, "b": 10})
    return fig


def vote_histogram(
    counts: Mapping[str, Sequence[int]],
    class_names: Sequence[str],
    *,
    top: int = 10,
    title: str | None = None,
) -> go.Figure:
    """Grouped bars: how often the base model voted for each class under each method's noise."""
    total = np.zeros(len(class_names))
    for c in counts.values():
        total += np.asarray(c, dtype=float)
    order = [int(i) for i in np.argsort(-total)[: min(top, len(class_names))]]
    fig = go.Figure()
    for method, c in counts.items():
        c = np.asarray(c, dtype=float)
        fig.add_trace(
            go.Bar(
                x=[class_names[i] for i in order],
                y=c[order],
                name=method,
                marker_color=_METHOD_COLORS.get(method, _OTHER_COLOR),
            )
        )
    fig.update_layout(
        barmode="group",
        title=title,
        xaxis_title="class voted by the base model",
        yaxis_title="votes",
        height=380,
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
    )
    return fig


def spectrum_figure(
    fitted: Sequence[float],
    effective: Sequence[float],
    *,
    residual_fitted: float,
    residual_effective: float,
    k_used: int,
) -> go.Figure:
    """Eigenvalues of the fitted covariance and of the one in use (after rank and shrinkage), log scale."""
    idx_fit = np.arange(1, len(fitted) + 1)
    idx_eff = np.arange(1, len(effective) + 1)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=idx_fit, y=list(fitted), mode="lines+markers", name="fitted lambda_i"))
    fig.add_trace(go.Scatter(x=idx_eff, y=list(effective), mode="lines+markers", name=f"in use (k = {k_used}, shrunk)"))
    span = [1, max(len(fitted), len(effective), 1)]
    fig.add_trace(
        go.Scatter(x=span, y=[residual_fitted] * 2, mode="lines", line_dash="dot", name="fitted residual rho^2")
    )
    fig.add_trace(
        go.Scatter(x=span, y=[residual_effective] * 2, mode="lines", line_dash="dash", name="residual rho^2 in use")
    )
    fig.update_layout(
        title="Eigenvalue spectrum of the threat covariance S",
        xaxis_title="index i",
        yaxis_title="eigenvalue (pixel variance)",
        yaxis={"type": "log", "dtick": 1, "exponentformat": "power"},
        height=380,
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
    )
    return fig


def explained_variance_figure(cumulative: Sequence[float], k_used: int) -> go.Figure:
    """Cumulative share of trace(S) carried by the top-i directions."""
    idx = np.arange(1, len(cumulative) + 1)
    fig = go.Figure(go.Scatter(x=idx, y=list(cumulative), mode="lines+markers", name="explained variance"))
    fig.add_vline(x=k_used, line_dash="dash", annotation_text=f"k = {k_used}")
    fig.update_layout(
        title="Explained variance of the top-i directions",
        xaxis_title="number of directions i",
        yaxis_title="fraction of trace(S)",
        yaxis_range=[0, 1.02],
        height=380,
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
    )
    return fig


@dataclass(frozen=True)
class RegionCurve:
    """One certified region's slice: its boundary in plane coordinates, with method, metric and radius."""

    method: str
    metric: str
    radius: float
    xs: np.ndarray
    ys: np.ndarray


def region_slice_figure(
    regions: Sequence[RegionCurve],
    *,
    attack_point: tuple[float, float] | None,
    x_title: str,
    y_title: str,
    abstained: Sequence[str] = (),
    view: float | None = None,
) -> go.Figure:
    """The certified regions cut by a 2-D plane through the image, with the attack's position.

    ``view`` limits both axes to [-view, view] (same scale on both); ``None`` shows everything.
    """
    fig = go.Figure()
    for region in regions:
        color = _METHOD_COLORS.get(region.method, _OTHER_COLOR)
        fig.add_trace(
            go.Scatter(
                x=region.xs,
                y=region.ys,
                mode="lines",
                fill="toself",
                opacity=0.35,
                line={"color": color, "width": 2},
                name=f"{region.method}: {region.metric} ball, R = {region.radius:.3g}",
            )
        )
    for method in abstained:
        fig.add_trace(
            go.Scatter(x=[None], y=[None], mode="markers", name=f"{method}: abstained (no region)", showlegend=True)
        )
    fig.add_trace(
        go.Scatter(x=[0], y=[0], mode="markers", marker={"symbol": "x", "size": 10, "color": "black"}, name="image x")
    )
    if attack_point is not None:
        fig.add_trace(
            go.Scatter(
                x=[attack_point[0]],
                y=[attack_point[1]],
                mode="markers",
                marker={
                    "symbol": "star",
                    "size": 16,
                    "color": "#ff7f0e",
                    "line": {"width": 1, "color": "black"},
                },
                name="x + attack perturbation",
            )
        )
    fig.update_layout(
        title="Certified regions in a 2-D slice through the image",
        xaxis_title=x_title,
        yaxis_title=y_title,
        height=520,
        legend={"orientation": "h", "yanchor": "top", "y": -0.15},
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
    )
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    if view is not None and view > 0:
        fig.update_xaxes(range=[-view, view])
        fig.update_yaxes(range=[-view, view])
    return fig


def guarantee_bars(rows: Sequence[Mapping[str, float | str]]) -> go.Figure:
    """Radii in shared metrics, one group per metric and one bar per method (no own-metric radii mixed)."""
    fig = go.Figure()
    metrics = [
        ("l2 radius in every direction", "l2 radius guaranteed in every direction"),
        ("l1 radius", "l1 radius guaranteed"),
    ]
    for row in rows:
        method = str(row["method"])
        fig.add_trace(
            go.Bar(
                x=[label for _, label in metrics],
                y=[float(row[key]) for key, _ in metrics],
                name=method,
                marker_color=_METHOD_COLORS.get(method, _OTHER_COLOR),
            )
        )
    fig.update_layout(
        barmode="group",
        title="The same guarantees, measured in the same metric",
        yaxis_title="radius",
        height=380,
        margin={"l": 10, "r": 10, "t": 60, "b": 40},
    )
    return fig
