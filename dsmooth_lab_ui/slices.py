"""2-D slices of the three certified regions, for the picture on the Certify page.

The plane goes through the clean image and is spanned by two orthonormal directions (typically the
attack perturbation and DSmooth's top eigen-direction). In that plane:

- the l2 ball of radius R is a disc of radius R (the basis is orthonormal);
- the Mahalanobis ball ``{d : d^T St^-1 d < R^2}`` is an ellipse ``[a b] M [a b]^T < R^2`` with
  ``M`` the 2x2 restriction of ``St^-1`` to the plane, read off the Mahalanobis distance of the
  basis vectors and of their sum (polarisation), so no d x d matrix is ever formed;
- the l1 ball is a convex polygon, traced numerically: along the direction at angle theta its
  boundary lies at ``R / ||cos(theta) e1 + sin(theta) e2||_1``.

Everything here is pure (tensors in, arrays out).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

# Chunk of angles evaluated at once when tracing the l1 polygon (bounds memory for ImageNet-sized d).
_ANGLE_CHUNK = 32
_PARALLEL_TOL = 1e-9


@dataclass(frozen=True)
class PlaneBasis:
    """Two orthonormal directions ``e1``, ``e2`` (flattened, float64) and what they stand for."""

    e1: torch.Tensor
    e2: torch.Tensor
    label1: str
    label2: str


def _unit(v: torch.Tensor) -> torch.Tensor | None:
    flat = v.detach().reshape(-1).to("cpu", torch.float64)
    norm = float(torch.linalg.vector_norm(flat))
    return None if norm <= _PARALLEL_TOL else flat / norm


def plane_basis(
    first: torch.Tensor | None,
    second: torch.Tensor | None,
    dim: int,
    *,
    label1: str = "direction 1",
    label2: str = "direction 2",
    seed: int = 0,
) -> PlaneBasis:
    """Orthonormalise ``first`` and ``second`` (Gram-Schmidt).

    A missing or zero direction, or a second direction parallel to the first, is replaced by a
    seeded random direction (and its label says so), so a picture can always be drawn.
    """
    generator = torch.Generator().manual_seed(seed)
    e1 = _unit(first) if first is not None else None
    if e1 is None:
        e1 = _unit(torch.randn(dim, generator=generator, dtype=torch.float64))
        label1 = "random direction"
    assert e1 is not None
    candidates = [(second, label2)] if second is not None else []
    for _ in range(4):
        candidates.append((torch.randn(dim, generator=generator, dtype=torch.float64), "random direction"))
    for vector, label in candidates:
        v = vector.detach().reshape(-1).to("cpu", torch.float64)
        v = v - (v @ e1) * e1
        e2 = _unit(v)
        if e2 is not None:
            return PlaneBasis(e1, e2, label1, label)
    raise ValueError("could not find a second direction (dimension 1?)")


def angles(count: int = 721) -> np.ndarray:
    """``count`` angles covering the full turn, first and last equal so curves close."""
    return np.linspace(0.0, 2.0 * np.pi, count)


def disc_boundary(radius: float, count: int = 721) -> tuple[np.ndarray, np.ndarray]:
    """The l2 ball's slice: a circle of ``radius``."""
    theta = angles(count)
    return radius * np.cos(theta), radius * np.sin(theta)


def restricted_form(
    mahalanobis: Callable[[torch.Tensor], torch.Tensor], basis: PlaneBasis, shape: tuple[int, ...]
) -> np.ndarray:
    """The 2x2 matrix ``M = [e_i^T St^-1 e_j]`` from three Mahalanobis distances."""
    batch = torch.stack([basis.e1, basis.e2, basis.e1 + basis.e2]).reshape(3, *shape)
    q = mahalanobis(batch).to(torch.float64).pow(2).cpu().numpy()
    m11, m22 = q[0], q[1]
    m12 = 0.5 * (q[2] - m11 - m22)
    return np.array([[m11, m12], [m12, m22]])


def ellipse_boundary(form: np.ndarray, radius: float, count: int = 721) -> tuple[np.ndarray, np.ndarray]:
    """Boundary of ``{p : p^T M p < R^2}``: along unit direction v it lies at ``R / sqrt(v^T M v)``."""
    theta = angles(count)
    v = np.stack([np.cos(theta), np.sin(theta)])
    quad = np.einsum("in,ij,jn->n", v, form, v)
    r = radius / np.sqrt(np.maximum(quad, 1e-300))
    return r * v[0], r * v[1]


def ellipse_semi_axes(form: np.ndarray, radius: float) -> np.ndarray:
    """Semi-axis lengths of the ellipse, ascending: ``R / sqrt(eigenvalues of M)``."""
    eig = np.linalg.eigvalsh(form)
    return np.sort(radius / np.sqrt(eig))


def l1_norms_along(basis: PlaneBasis, theta: np.ndarray) -> np.ndarray:
    """``||cos(t) e1 + sin(t) e2||_1`` for each angle t, computed in chunks."""
    out = np.empty(len(theta))
    e = torch.stack([basis.e1, basis.e2])  # (2, d)
    for start in range(0, len(theta), _ANGLE_CHUNK):
        t = torch.as_tensor(theta[start : start + _ANGLE_CHUNK], dtype=torch.float64)
        coeffs = torch.stack([torch.cos(t), torch.sin(t)], dim=1)  # (m, 2)
        out[start : start + len(t)] = (coeffs @ e).abs().sum(dim=1).numpy()
    return out


def l1_boundary(basis: PlaneBasis, radius: float, count: int = 721) -> tuple[np.ndarray, np.ndarray]:
    """The l1 ball's slice, traced along ``count`` directions."""
    theta = angles(count)
    r = radius / l1_norms_along(basis, theta)
    return r * np.cos(theta), r * np.sin(theta)


def coordinates(delta: torch.Tensor, basis: PlaneBasis) -> tuple[float, float]:
    """Coordinates of ``delta``'s projection onto the plane."""
    flat = delta.detach().reshape(-1).to("cpu", torch.float64)
    return float(flat @ basis.e1), float(flat @ basis.e2)


def off_plane_norm(delta: torch.Tensor, basis: PlaneBasis) -> float:
    """l2 size of the part of ``delta`` outside the plane (0 when it lies in the plane)."""
    flat = delta.detach().reshape(-1).to("cpu", torch.float64)
    a, b = coordinates(delta, basis)
    return float(torch.linalg.vector_norm(flat - a * basis.e1 - b * basis.e2))


@dataclass(frozen=True)
class SliceEntry:
    """A certified region to cut: the method, its metric label, radius, and how to measure it."""

    method: str
    metric: str
    radius: float
    kind: str  # "l2", "l1" or "mahalanobis"
    mahalanobis: Callable[[torch.Tensor], torch.Tensor] | None = None


def region_curves(
    entries: list[SliceEntry], basis: PlaneBasis, shape: tuple[int, ...], count: int = 721
) -> list[tuple[SliceEntry, np.ndarray, np.ndarray]]:
    """Boundary of each region in the plane's coordinates."""
    out = []
    for entry in entries:
        if entry.kind == "l2":
            xs, ys = disc_boundary(entry.radius, count)
        elif entry.kind == "l1":
            xs, ys = l1_boundary(basis, entry.radius, count)
        elif entry.kind == "mahalanobis":
            if entry.mahalanobis is None:
                raise ValueError("a Mahalanobis region needs its distance function")
            xs, ys = ellipse_boundary(restricted_form(entry.mahalanobis, basis, shape), entry.radius, count)
        else:
            raise ValueError(f"unknown region kind {entry.kind!r}")
        out.append((entry, xs, ys))
    return out
