"""2-D slices of the certified regions, for the picture on the Certify page.

The plane goes through the clean image and is spanned by two orthonormal directions (typically the
attack perturbation and DSmooth's top eigen-direction). Each noise says where its own region ends
along a direction of the plane (``SmoothingNoise.slice_radii``); this module picks the plane, the
angles, and turns those distances into boundary points. Everything here is pure (tensors in, arrays out).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dsmooth_core import SmoothingNoise

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


def region_boundary(
    noise: SmoothingNoise, radius: float, basis: PlaneBasis, shape: tuple[int, ...], count: int = 721
) -> tuple[np.ndarray, np.ndarray]:
    """Boundary of ``noise``'s certified region of ``radius`` in the plane's coordinates."""
    theta = angles(count)
    r = noise.slice_radii(radius, basis.e1, basis.e2, torch.from_numpy(theta), shape).numpy()
    return r * np.cos(theta), r * np.sin(theta)


def coordinates(delta: torch.Tensor, basis: PlaneBasis) -> tuple[float, float]:
    """Coordinates of ``delta``'s projection onto the plane."""
    flat = delta.detach().reshape(-1).to("cpu", torch.float64)
    return float(flat @ basis.e1), float(flat @ basis.e2)
