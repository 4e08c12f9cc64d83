"""The 2-D world's computations: a plane data set, its classifier, smoothed regions and certificates.

The plane is the unit square [0, 1]^2 and a point of it is a one-row "image" of shape (1, 1, 2), so
the core's contract (images in [0, 1] of shape (C, H, W)) holds unchanged and the same noise objects
and the same ``certify`` run here as on CIFAR-10: d = 2 is just a small d. Nothing here imports
streamlit; the page caches these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dsmooth_core.attacks.fgsm import fgsm_l2
from dsmooth_core.certify import ABSTAIN, Certificate, certify
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.noise import AnisotropicGaussian, IsotropicGaussian, Laplace, SmoothingNoise

SHAPE = (1, 1, 2)  # a point (u, v) of the plane as a (C, H, W) image
DATASETS = ("two moons", "two blobs")
CLASSIFIERS = ("small MLP", "linear")
CLASS_COUNT = 2
_SAME_STEP = 1e-9  # spread of the attack steps, relative to their size, below which they count as one
# rows of one grid batch: its hidden layer (2 MiB) stays in cache; at 1 << 17 rows (8 MiB) the three
# region maps took 44 ms against 31 ms (2-core machine)
_FORWARD_CHUNK = 1 << 15


# ----------------------------------------------------------------------------- data and classifier
def make_points(dataset: str, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` labelled points inside [0.1, 0.9]^2 from a seeded generator: (count, 2) floats and 0/1 labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % CLASS_COUNT
    if dataset == "two moons":
        t = rng.uniform(0, math.pi, count)
        upper = np.stack([np.cos(t), np.sin(t)], axis=1)
        lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=1)
        raw = np.where(labels[:, None] == 0, upper, lower) + rng.normal(0, 0.12, (count, 2))
        points = (raw - [-1.0, -0.5]) / [3.0, 1.5] * 0.8 + 0.1  # moons span about [-1, 2] x [-0.5, 1]
    elif dataset == "two blobs":
        centres = np.array([[0.35, 0.6], [0.65, 0.4]])
        points = centres[labels] + rng.normal(0, 0.09, (count, 2))
    else:
        raise ValueError(f"unknown data set {dataset!r}: choose one of {', '.join(DATASETS)}")
    return np.clip(points, 0.1, 0.9).astype(np.float32), labels


class PlaneClassifier(nn.Module):
    """A classifier of the plane that takes the core's image batches (B, 1, 1, 2) and returns logits."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(x.shape[0], 2))


def train_classifier(points: np.ndarray, labels: np.ndarray, kind: str, seed: int, steps: int = 60) -> PlaneClassifier:
    """A small MLP or a linear classifier fitted by full-batch Adam in a fraction of a second, seeded."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "small MLP":
        layers = [nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, CLASS_COUNT)]
    elif kind == "linear":
        layers = [nn.Linear(2, CLASS_COUNT)]
    else:
        raise ValueError(f"unknown classifier {kind!r}: choose one of {', '.join(CLASSIFIERS)}")
    body = nn.Sequential(*layers)
    with torch.no_grad():
        for layer in layers:
            if isinstance(layer, nn.Linear):
                bound = 1 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.zero_()
    model = PlaneClassifier(body)
    inputs = torch.from_numpy(points).reshape(-1, *SHAPE)
    targets = torch.from_numpy(labels).long()
    # fused: one kernel per step for all parameters instead of a Python loop over them; training is the
    # largest piece of the redraw after a new data set or seed (benchmarks/bench_world.py). 60 steps fit
    # the training points about as well as 120 (seed 3: moons 92.5% against 93.5%, blobs 98% both) in half
    # the time (11 ms against 21 ms)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1, fused=True)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()
    return model.eval().requires_grad_(False)


def linear_classifier(normal: tuple[float, float], offset: float) -> PlaneClassifier:
    """f(x) = class 1 iff normal . x > offset: the closed-form case of docs/MATH.md section 7."""
    layer = nn.Linear(2, CLASS_COUNT)
    with torch.no_grad():
        w = torch.tensor(normal, dtype=torch.float32)
        layer.weight.copy_(torch.stack([-w / 2, w / 2]))
        layer.bias.copy_(torch.tensor([offset / 2, -offset / 2]))
    return PlaneClassifier(layer).eval().requires_grad_(False)


# ----------------------------------------------------------------------------- the three noises
def ellipse_covariance(angle_degrees: float, axis_ratio: float) -> LowRankCovariance:
    """The plane's covariance with its long axis at ``angle_degrees`` and ``axis_ratio`` = long / short std.

    In d = 2 the core's rank-1 low-rank form is exact: the eigenvector is the long axis, its eigenvalue
    ``axis_ratio^2`` and the residual (the short axis) 1; St then rescales it to determinant 1.
    """
    if not (math.isfinite(axis_ratio) and axis_ratio >= 1):
        raise ValueError(f"the axis ratio must be a number >= 1, got {axis_ratio}")
    t = math.radians(angle_degrees)
    direction = torch.tensor([[math.cos(t)], [math.sin(t)]], dtype=torch.float64)
    long_var = float(axis_ratio) ** 2
    return LowRankCovariance(
        shape=SHAPE,
        eigenvectors=direction,
        base_eigenvalues=torch.tensor([long_var], dtype=torch.float64),
        base_residual=1.0,
        trace=long_var + 1.0,
        n_samples=0,
        rank=2,
        metadata={"source": f"drawn: angle {angle_degrees:g} deg, axis ratio {axis_ratio:g}"},
    )


def attack_perturbations(model: nn.Module, points: np.ndarray, labels: np.ndarray, eps2: float) -> torch.Tensor:
    """The core's l2 FGSM on every data point: the non-zero perturbations x_adv - x, shape (N, 1, 1, 2)."""
    x = torch.from_numpy(points).reshape(-1, *SHAPE)
    delta = fgsm_l2(model, x, torch.from_numpy(labels).long(), eps2) - x
    return delta[delta.flatten(1).norm(dim=1) > 0]


def fitted_covariance(perturbations: torch.Tensor) -> LowRankCovariance:
    """DSmooth's threat covariance fitted by the core to attack steps: k = 1 plus the residual, exact in d = 2."""
    if len(perturbations) < 2:
        raise ValueError("the attack moved fewer than 2 points; a covariance needs at least 2 perturbations")
    flat = perturbations.reshape(len(perturbations), -1).double()
    # steps identical up to rounding (all points of one class moved along one gradient) would fit rounding errors
    if float(flat.var(dim=0).sum()) <= _SAME_STEP * float(flat.pow(2).sum(dim=1).mean()):
        raise ValueError("all perturbations are identical (one gradient direction): their covariance is zero")
    return LowRankCovariance.fit(perturbations, k=1, metadata={"source": "FGSM l2 on the data set"})


def noises(sigma: float, covariance: LowRankCovariance) -> tuple[SmoothingNoise, ...]:
    """RandSmooth, LSmooth (variance matched: scale sigma / sqrt 2) and DSmooth at the same sigma."""
    return IsotropicGaussian(sigma), Laplace.from_sigma(sigma), AnisotropicGaussian(sigma, covariance)


# ----------------------------------------------------------------------------- regions over a grid
@dataclass(frozen=True)
class Grid:
    """Cell centres of a ``size`` x ``size`` grid over [0, 1]^2; ``points`` is (size^2, 2), row-major in v."""

    size: int

    @property
    def axis(self) -> np.ndarray:
        return (np.arange(self.size) + 0.5) / self.size

    @property
    def spacing(self) -> float:
        return 1.0 / self.size

    @property
    def points(self) -> np.ndarray:
        u, v = np.meshgrid(self.axis, self.axis)
        return np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float32)


@torch.inference_mode()
def _classes(model: nn.Module, flat_points: torch.Tensor) -> torch.Tensor:
    """The base classifier's class at each of (M, 2) points, in chunks."""
    out = [model(chunk.reshape(-1, *SHAPE)).argmax(dim=1) for chunk in flat_points.split(_FORWARD_CHUNK)]
    return torch.cat(out)


def base_regions(model: nn.Module, grid: Grid) -> np.ndarray:
    """The base classifier's class at each grid cell, (size, size) with rows along v."""
    return _classes(model, torch.from_numpy(grid.points)).reshape(grid.size, grid.size).numpy()


def smoothed_shares(model: nn.Module, grid: Grid, noise: SmoothingNoise, draws: int, seed: int) -> np.ndarray:
    """Monte Carlo estimate of P(f(x + e) = 1) at every grid cell, (size, size).

    The ``draws`` noise vectors come from the core's noise object and are shared by all cells (common
    random numbers), so the estimated region is smooth in x; the certificates draw their own noise.
    """
    generator = torch.Generator().manual_seed(seed)
    offsets = noise.sample(draws, SHAPE, generator).reshape(draws, 2)
    centres = torch.from_numpy(grid.points)
    noisy = (centres[:, None, :] + offsets[None, :, :]).reshape(-1, 2)
    votes = _classes(model, noisy).reshape(len(centres), draws)
    return (votes == 1).float().mean(dim=1).reshape(grid.size, grid.size).numpy()


# ----------------------------------------------------------------------------- certificates and shapes
def as_image(point: tuple[float, float]) -> torch.Tensor:
    """A plane point as the core's image (1, 1, 2); ``certify`` refuses it outside [0, 1]^2."""
    return torch.tensor(point, dtype=torch.float32).reshape(SHAPE)


def certify_point(
    model: nn.Module, point: tuple[float, float], noise: SmoothingNoise, n0: int, n: int, alpha: float, seed: int
) -> Certificate:
    """The core's CERTIFY at one point of the plane, all draws in one batch (d = 2 costs nothing)."""
    generator = torch.Generator().manual_seed(seed)
    return certify(model, as_image(point), noise, n0, n, alpha, batch_size=max(n0, n), generator=generator)


def outline(noise: SmoothingNoise, radius: float, point: tuple[float, float], corners: int = 360) -> np.ndarray:
    """The boundary of the certified region of ``radius`` around ``point``, (corners + 1, 2), closed.

    From the noise's own ``slice_radii`` in the plane's axes, so the disc, the diamond and the ellipse
    are the core's regions. Angles in steps of 360/corners degrees include the axes, hence the diamond's
    vertices, and a polygon through boundary points of a polygon with its vertices is exact.
    """
    angles = torch.linspace(0, 2 * math.pi, corners + 1, dtype=torch.float64)
    e1 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    e2 = torch.tensor([0.0, 1.0], dtype=torch.float64)
    reach = noise.slice_radii(radius, e1, e2, angles, SHAPE).numpy()
    t = angles.numpy()
    return np.asarray(point) + reach[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)


@dataclass(frozen=True)
class NearestOther:
    """The nearest grid cell where a region holds another class than the certificate's, in the noise's metric."""

    point: tuple[float, float]
    distance: float


def nearest_other_class(
    noise: SmoothingNoise, point: tuple[float, float], label: int, regions: np.ndarray, grid: Grid
) -> NearestOther | None:
    """Among the grid cells whose class in ``regions`` is not ``label``, the nearest to ``point``.

    Distances are the noise's own metric (``noise.distance``); ``None`` when no cell of another class
    lies in the square.
    """
    others = grid.points[regions.ravel() != label]
    if label == ABSTAIN or not len(others):
        return None
    delta = torch.from_numpy(others - np.asarray(point, dtype=np.float32)).reshape(-1, *SHAPE)
    distances = noise.distance(delta.double())
    best = int(distances.argmin())
    return NearestOther(point=(float(others[best, 0]), float(others[best, 1])), distance=float(distances[best]))
