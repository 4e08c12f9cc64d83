"""Typed settings and result keys: the one home of what shapes a result, validated where it enters.

A value is checked once, when its settings object is built (from a widget, a command-line argument or
library code), and the object is then passed down unchanged. The same objects name a result: a cache
or record key is :func:`result_key` over them, so a key cannot leave out a setting that shaped it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsmooth_core.contract import check_alpha, check_count
from dsmooth_core.covariance import NORMALIZATIONS, LowRankCovariance
from dsmooth_core.errors import InputRefused
from dsmooth_core.models.info import ModelInfo
from dsmooth_core.noise import SmoothingNoise, make_noise, method_class


def _refused(check: Any, *args: object) -> Any:
    """Run a ``contract.check_*`` with its message, as the project's refusal (one line, exit 2)."""
    try:
        return check(*args)
    except (TypeError, ValueError) as exc:
        raise InputRefused(str(exc)) from None


def check_sigma(sigma: object) -> float:
    """A noise level: a positive finite number (True is refused, not read as 1)."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (math.isfinite(sigma) and sigma > 0):
        raise InputRefused(f"sigma must be a positive finite number, got {sigma!r}")
    return float(sigma)


@dataclass(frozen=True)
class CertifySettings:
    """How one image is certified: the method's key, its noise level, sample sizes, level, batch and seed.

    ``batch`` is part of the identity: the draws are split into batches of this size, and a model's
    float results (hence a near-tie vote) can depend on the batch it runs in.
    """

    method: str
    sigma: float
    n0: int = 100
    n: int = 1000
    alpha: float = 0.001
    batch: int = 400
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.method, str):
            raise InputRefused(f"method must be a method key, got {self.method!r}")
        key = method_class(self.method).key  # refuses an unknown method with the list of keys
        object.__setattr__(self, "method", key)
        object.__setattr__(self, "sigma", check_sigma(self.sigma))
        object.__setattr__(self, "alpha", _refused(check_alpha, self.alpha))
        for name in ("n0", "n", "batch"):
            object.__setattr__(self, name, _refused(check_count, name, getattr(self, name)))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputRefused(f"seed must be an integer of 0 or more, got {self.seed!r}")

    def identity(self) -> dict[str, object]:
        """Every field: each one shapes the certificate."""
        return dataclasses.asdict(self)

    def noise(self, covariance: LowRankCovariance | None = None) -> SmoothingNoise:
        """The smoothing distribution of these settings (DSmooth needs the profile's ``covariance``)."""
        return make_noise(self.method, self.sigma, covariance)


@dataclass(frozen=True)
class ProfileShape:
    """How a fitted threat covariance is shaped for DSmooth: its normalization, rank ``k`` and shrinkage."""

    normalization: str
    k: int
    shrinkage: float

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise InputRefused(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")
        object.__setattr__(self, "k", _refused(check_count, "k", self.k))
        shrinkage = self.shrinkage
        if isinstance(shrinkage, bool) or not isinstance(shrinkage, (int, float)) or not 0.0 <= shrinkage <= 1.0:
            raise InputRefused(f"shrinkage must lie in [0, 1], got {shrinkage!r}")
        object.__setattr__(self, "shrinkage", float(shrinkage))

    @classmethod
    def of(cls, covariance: LowRankCovariance) -> ProfileShape:
        """The shape a covariance has now (a saved, possibly tuned, profile's)."""
        return cls(covariance.normalization, covariance.k, covariance.shrinkage)

    def apply(self, fitted: LowRankCovariance) -> LowRankCovariance:
        """The fit with this shape: the one place it is applied (``k`` is clamped to the fit's rank)."""
        return (
            fitted.with_rank(min(self.k, fitted.k))
            .with_shrinkage(self.shrinkage)
            .with_normalization(self.normalization)
        )

    def identity(self) -> dict[str, object]:
        return dataclasses.asdict(self)


TORCH_FORWARD = "torch"  # the forward of every result written before the backends existed


def forward_identity(forward: str) -> dict[str, str]:
    """The forward's part of a result's identity (``forward``: ``backends.forward_name`` of the model used).

    The two engines may differ by a handful of votes (float near-ties), so a result names the one that
    made it and is never served for the other. Torch contributes nothing: results and records written
    before the backends existed were all made by torch, and their keys stay what a torch run computes
    today (a record or file without the field reads as torch).
    """
    if not isinstance(forward, str) or not forward:
        raise InputRefused(f"forward must be an engine's name, got {forward!r}")
    return {} if forward == TORCH_FORWARD else {"forward": forward}


def engine_part(forward: str) -> tuple[dict[str, str], ...]:
    """The forward's part of a key built from positional parts: none for torch, so keys made before the
    backends existed (all torch) stay what a torch run computes today; ``(forward_identity,)`` otherwise."""
    identity = forward_identity(forward)
    return (identity,) if identity else ()


def tensor_hash(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's dtype, shape and values (on the CPU, contiguous)."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest = hashlib.sha256(f"{flat.dtype}\0{tuple(tensor.shape)}\0".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def canonical(part: object) -> object:
    """A JSON-ready value that names ``part`` by content: what :func:`result_key` hashes."""
    if part is None or isinstance(part, (bool, int, float, str)):
        return part
    if isinstance(part, ModelInfo):
        return {"model": part.identity}
    if isinstance(part, SmoothingNoise):
        return {"noise": canonical(part.identity())}
    if isinstance(part, LowRankCovariance):
        return {"covariance": part.content_hash()}
    if isinstance(part, torch.Tensor):
        return {"tensor": tensor_hash(part)}
    if isinstance(part, Path):
        return str(part)
    identity = getattr(part, "identity", None)
    if dataclasses.is_dataclass(part) and not isinstance(part, type):
        fields = identity() if callable(identity) else dataclasses.asdict(part)
        return {type(part).__name__: canonical(fields)}
    if isinstance(part, Mapping):
        return {str(key): canonical(value) for key, value in part.items()}
    if isinstance(part, (list, tuple)):
        return [canonical(value) for value in part]
    raise TypeError(f"result_key cannot name a {type(part).__name__} by its content")


def result_key(*parts: object) -> str:
    """sha256 hex of a canonical JSON of ``parts``: the one place cache and record keys are built."""
    text = json.dumps(canonical(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
