"""Tables and the slice picture of the Certify page, built from a finished certification record.

Pure functions of the record (certificate fields and the noise objects used), the attack
perturbation and the class names; no streamlit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
import torch

from dsmooth_core import ABSTAIN, AnisotropicGaussian, SmoothingNoise
from dsmooth_lab_ui import compare, figures, slices

ORDER = ("DSmooth", "RandSmooth", "LSmooth")


def ordered(results: Mapping[str, Any]) -> list[str]:
    return [m for m in ORDER if m in results] + [m for m in results if m not in ORDER]


def result_rows(
    results: Mapping[str, Mapping[str, Any]], class_names: Sequence[str], true_label: int | None
) -> list[dict[str, Any]]:
    """One row per method: the certificate as DCERT returned it, radius labelled with its metric."""
    rows = []
    for method in ordered(results):
        cert = results[method]
        prediction = cert["prediction"]
        abstained = prediction == ABSTAIN
        metric = compare.METRIC_LABEL.get(cert["metric"], cert["metric"])
        top = max(range(len(cert["counts_estimation"])), key=lambda i: cert["counts_estimation"][i])
        rows.append(
            {
                "method": method,
                "certified region": compare.REGION.get(method, ""),
                "metric": metric,
                "prediction": "ABSTAIN" if abstained else class_names[prediction],
                "true label": None if true_label is None else class_names[true_label],
                "correct": None if true_label is None or abstained else prediction == true_label,
                "p_lower": cert["p_lower"],
                "votes for top class (of n)": (
                    f"{cert['counts_estimation'][prediction if not abstained else top]} / {cert['n']}"
                ),
                "radius R": cert["radius"],
                "radius metric": metric,
                "radius ceiling (same metric)": cert["radius_ceiling"],
                "n0": cert["n0"],
                "n": cert["n"],
                "alpha": cert["alpha"],
                "seconds": cert["seconds"],
            }
        )
    return rows


def comparison_rows(
    results: Mapping[str, Mapping[str, Any]],
    noises: Mapping[str, SmoothingNoise],
    delta: torch.Tensor | None,
    dim: int,
    true_label: int | None,
) -> list[dict[str, Any]]:
    """MATH.md section 6 side by side: shared-metric radii and the attack against each region."""
    rows = []
    for method in ordered(results):
        cert = results[method]
        noise = noises[method]
        g = compare.guarantee(noise, cert["radius"], dim)
        row: dict[str, Any] = {
            "method": method,
            "own metric": compare.METRIC_LABEL.get(cert["metric"], cert["metric"]),
            "R (own metric)": cert["radius"],
        }
        if delta is not None:
            size, is_inside = compare.inside(noise, cert["radius"], delta)
            correct = true_label is not None and cert["prediction"] == true_label
            row["attack size (own metric)"] = size
            row["attack inside region"] = is_inside
            row["certified against the attack"] = bool(is_inside and correct) if true_label is not None else None
        row.update(
            {
                "l2 radius in every direction": g.l2_every_direction,
                "l1 radius": g.l1,
                "l_inf radius (lower bound)": g.linf_lower_bound,
                "equal-volume l2 radius (size only)": g.equal_volume_l2,
            }
        )
        rows.append(row)
    return rows


def slice_figure(
    results: Mapping[str, Mapping[str, Any]],
    noises: Mapping[str, SmoothingNoise],
    delta: torch.Tensor | None,
    shape: tuple[int, ...],
    count: int = 721,
    zoom: bool = False,
) -> tuple[go.Figure, slices.PlaneBasis]:
    """The three regions cut by the plane of the attack perturbation and DSmooth's top eigen-direction.

    With ``zoom`` the view is limited to the neighbourhood of the attack point and of the isotropic
    regions (DSmooth's ellipse may then run off the picture along its long axis).
    """
    dim = 1
    for s in shape:
        dim *= s
    dsmooth = next((n for n in noises.values() if isinstance(n, AnisotropicGaussian)), None)
    top = dsmooth.covariance.eigenvectors[:, 0] if dsmooth is not None and dsmooth.covariance.k else None
    if delta is not None:
        basis = slices.plane_basis(
            delta,
            top,
            dim,
            label1="along the attack perturbation",
            label2="along DSmooth's top eigen-direction u1 (orthogonalised)",
        )
    else:
        basis = slices.plane_basis(top, None, dim, label1="along DSmooth's top eigen-direction u1")
    entries, abstained = [], []
    for method in ordered(results):
        cert = results[method]
        if cert["prediction"] == ABSTAIN or cert["radius"] <= 0:
            abstained.append(method)
            continue
        noise = noises[method]
        kind = cert["metric"]
        entries.append(
            slices.SliceEntry(
                method=method,
                metric=compare.METRIC_LABEL.get(kind, kind),
                radius=float(cert["radius"]),
                kind=kind,
                mahalanobis=noise.distance if kind == "mahalanobis" else None,
            )
        )
    curves = slices.region_curves(entries, basis, shape, count)
    point = slices.coordinates(delta, basis) if delta is not None else None
    view = None
    if zoom:
        sizes = [abs(v) for v in point] if point is not None else []
        sizes += [e.radius for e in entries if e.kind in ("l2", "l1")]
        sizes += [float(abs(xs).max()) for e, xs, _ in curves if e.kind == "mahalanobis"]
        view = 1.3 * max(sizes) if sizes and max(sizes) > 0 else None
    fig = figures.region_slice_figure(
        [figures.RegionCurve(e.method, e.metric, e.radius, xs, ys) for e, xs, ys in curves],
        attack_point=point,
        x_title=f"{basis.label1} (l2 units)",
        y_title=f"{basis.label2} (l2 units)",
        abstained=abstained,
        view=view,
    )
    return fig, basis
