"""Tables and the slice picture of the Certify page, built from a finished certification record.

Pure functions of the (noise, certificate) pairs, the attack perturbation and the class names; no
streamlit. What a certificate guarantees and whether the attack lies inside its region is asked of
:func:`dsmooth_core.compare`; the method's names and region come from its noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
import torch

from dsmooth_core import Certificate, SmoothingNoise, compare
from dsmooth_core.noise import METHODS
from dsmooth_lab_ui import figures, slices

Results = Sequence[tuple[SmoothingNoise, Certificate]]


def ordered(results: Results) -> list[tuple[SmoothingNoise, Certificate]]:
    """The pairs in the registry's method order (DSmooth, RandSmooth, LSmooth)."""
    return sorted(results, key=lambda pair: METHODS.index(pair[0].key))


def result_rows(results: Results, class_names: Sequence[str], true_label: int | None) -> list[dict[str, Any]]:
    """One row per method: the certificate as DCERT returned it, radius labelled with its metric."""
    rows = []
    for noise, cert in ordered(results):
        rows.append(
            {
                "method": noise.name,
                "certified region": noise.region_name,
                "metric": noise.metric_label,
                "prediction": "ABSTAIN" if cert.abstained else class_names[cert.prediction],
                "true label": None if true_label is None else class_names[true_label],
                "correct": None if true_label is None or cert.abstained else cert.prediction == true_label,
                "p_lower": cert.p_lower,
                "votes for top class (of n)": f"{cert.selected_votes} / {cert.n}",
                "radius R": cert.radius,
                "radius metric": noise.metric_label,
                "radius ceiling (same metric)": cert.radius_ceiling,
                "n0": cert.n0,
                "n": cert.n,
                "alpha": cert.alpha,
                "seconds": cert.seconds,
            }
        )
    return rows


def comparison_rows(
    results: Results, delta: torch.Tensor | None, dim: int, true_label: int | None
) -> list[dict[str, Any]]:
    """docs/MATH.md section 6 side by side: shared-metric radii and the attack against each region."""
    rows = []
    for noise, cert in ordered(results):
        c = compare(cert, noise, delta, label=true_label, dim=dim)
        row: dict[str, Any] = {"method": noise.name, "own metric": noise.metric_label, "R (own metric)": cert.radius}
        if delta is not None:
            row["attack size (own metric)"] = c.distance
            row["attack inside region"] = c.inside
            row["certified against the attack"] = c.certified
        row.update(
            {
                "l2 radius in every direction": c.l2_inscribed,
                "l1 radius": c.l1_inscribed,
                "l_inf radius (lower bound)": c.linf_lower_bound,
                "equal-volume l2 radius (size only)": c.equal_volume_l2,
            }
        )
        rows.append(row)
    return rows


def slice_figure(
    results: Results,
    delta: torch.Tensor | None,
    shape: tuple[int, ...],
    count: int = 721,
    zoom: bool = False,
) -> tuple[go.Figure, slices.PlaneBasis]:
    """The regions cut by the plane of the attack perturbation and the top eigen-direction of anisotropic noise.

    With ``zoom`` the view is limited to the neighbourhood of the attack point and of the isotropic
    regions (an ellipse may then run off the picture along its long axis).
    """
    dim = 1
    for s in shape:
        dim *= s
    pairs = ordered(results)
    stretched = next(((noise, noise.top_direction()) for noise, _ in pairs if noise.top_direction() is not None), None)
    top = stretched[1] if stretched else None
    top_label = f"along {stretched[0].name}'s top eigen-direction u1" if stretched else "direction 2"
    if delta is not None:
        basis = slices.plane_basis(
            delta, top, dim, label1="along the attack perturbation", label2=f"{top_label} (orthogonalised)"
        )
    else:
        basis = slices.plane_basis(top, None, dim, label1=top_label)
    curves, abstained, sizes = [], [], []
    for noise, cert in pairs:
        if cert.abstained or cert.radius <= 0:
            abstained.append(noise.name)
            continue
        xs, ys = slices.region_boundary(noise, cert.radius, basis, shape, count)
        curves.append(figures.RegionCurve(noise.name, noise.metric_label, float(cert.radius), xs, ys))
        # an isotropic region is framed by its radius, a stretched one by its extent along the first axis
        sizes.append(float(cert.radius) if noise.top_direction() is None else float(abs(xs).max()))
    point = slices.coordinates(delta, basis) if delta is not None else None
    view = None
    if zoom:
        sizes += [abs(v) for v in point] if point is not None else []
        view = 1.3 * max(sizes) if sizes and max(sizes) > 0 else None
    fig = figures.region_slice_figure(
        curves,
        attack_point=point,
        x_title=f"{basis.label1} (l2 units)",
        y_title=f"{basis.label2} (l2 units)",
        abstained=abstained,
        view=view,
    )
    return fig, basis
