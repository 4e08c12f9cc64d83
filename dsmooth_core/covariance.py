"""Low-rank-plus-isotropic model of the threat covariance (docs/MATH.md section 3).

The empirical covariance of N attack perturbations has rank at most N - 1, so it is singular for
image-sized d. The probabilistic-PCA form keeps the top k directions and spreads the rest of the
variance evenly, which makes it positive definite, cheap to sample (O(d k)) and cheap to invert.
Every quantity is exposed in the metric of the normalized matrix St = S_k / c that DSmooth
certifies in: c = det(S_k)^(1/d) (the paper's choice, equal volume to N(0, I)) or c = trace(S_k) / d
(equal noise energy: trace(St) = d, the same expected squared norm as N(0, I)).
"""

from __future__ import annotations

import hashlib
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

# When the discarded eigenvalues sum to zero (e.g. k equals the rank), the residual variance is
# floored at this fraction of the top eigenvalue so that S_k stays positive definite.
RESIDUAL_FLOOR = 1e-6
# Elements of one float64 column block of the perturbations (128 MiB).
_BLOCK_ELEMENTS = 2**24
# Rows of one block of the Gram matrix: small enough that skipping the blocks below the diagonal
# saves work, large enough for efficient matrix products.
_GRAM_ROWS = 256
_THREAD_LOCK = threading.Lock()
_FORMAT_VERSION = 1
# How S_k is scaled into St: "det" gives det(St) = 1, "trace" gives trace(St) = d.
NORMALIZATIONS = ("det", "trace")


@dataclass(frozen=True, eq=False)
class LowRankCovariance:
    """S_k = U diag(lambda - rho^2) U^T + rho^2 I, optionally shrunk toward t I.

    ``base_eigenvalues``/``base_residual`` are the fitted values; ``shrinkage`` mixes them with the
    mean variance ``trace / d`` so the isotropic end (shrinkage 1) is exactly RandSmooth.
    """

    shape: tuple[int, ...]
    eigenvectors: torch.Tensor  # (d, k), orthonormal columns, float64
    base_eigenvalues: torch.Tensor  # (k,), descending, float64
    base_residual: float
    trace: float
    shrinkage: float = 0.0
    normalization: str = "det"
    n_samples: int = 0
    rank: int = 0
    residual_floored: bool = False
    mean: torch.Tensor | None = None  # mean perturbation (d,), informative only
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        d, k = self.eigenvectors.shape
        if d != math.prod(self.shape):
            raise ValueError(f"eigenvectors have {d} rows but shape {self.shape} has {math.prod(self.shape)}")
        if self.base_eigenvalues.shape != (k,):
            raise ValueError("one eigenvalue per eigenvector is required")
        if not 0 <= k < d:
            raise ValueError(f"rank k must satisfy 0 <= k < d = {d}, got {k}")
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1], got {self.shrinkage}")
        if not self.base_residual > 0:
            raise ValueError("the residual variance must be positive")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}")

    # ----------------------------------------------------------------- construction
    @classmethod
    def fit(
        cls,
        perturbations: torch.Tensor,
        k: int,
        shrinkage: float = 0.0,
        metadata: dict[str, Any] | None = None,
        normalization: str = "det",
    ) -> LowRankCovariance:
        """Fit from an (N, C, H, W) tensor of perturbations through a thin SVD.

        The thin SVD of the centred data D is taken from the eigen-decomposition of the N x N Gram
        matrix D D^T (or of D^T D when N > d), so no d x d matrix is formed for image-sized d.
        """
        if perturbations.dim() < 2:
            raise ValueError("perturbations must have shape (N, ...) with one perturbation per row")
        n_samples = perturbations.shape[0]
        if n_samples < 2:
            raise ValueError(f"at least 2 perturbations are needed to estimate a covariance, got {n_samples}")
        if not torch.isfinite(perturbations).all():
            raise ValueError("perturbations contain NaN or infinite values")
        if k < 1:
            raise ValueError(f"rank k must be at least 1, got {k}")
        shape = tuple(perturbations.shape[1:])
        flat = perturbations.reshape(n_samples, -1)
        d = flat.shape[1]
        mean = torch.cat([block.mean(dim=0) for _, block in _float64_blocks(flat)])
        eigenvalues, trace, top_vectors = _spectrum(flat, mean)
        if trace <= 0:
            raise ValueError("all perturbations are identical: their covariance is zero")

        tol = eigenvalues[0] * max(n_samples, d) * torch.finfo(torch.float64).eps * 1e3
        rank = int((eigenvalues > tol).sum())
        k_max = min(rank, d - 1)
        if k > k_max:
            warnings.warn(
                f"requested rank k={k} exceeds what the data allows (rank {rank} from {n_samples} "
                f"perturbations in d={d}); using k={k_max}",
                stacklevel=2,
            )
            k = k_max
        top = eigenvalues[:k]
        residual = (trace - float(top.sum())) / (d - k)
        floor = RESIDUAL_FLOOR * float(eigenvalues[0])
        floored = residual < floor
        if floored:
            warnings.warn(
                f"the residual variance is {residual:.3g}; floored at {RESIDUAL_FLOOR:g} x lambda_1 = "
                f"{floor:.3g} so the covariance stays positive definite",
                stacklevel=2,
            )
            residual = floor
        return cls(
            shape=shape,
            eigenvectors=top_vectors(k),
            base_eigenvalues=top.clamp(min=residual).contiguous(),
            base_residual=residual,
            trace=trace,
            shrinkage=float(shrinkage),
            normalization=normalization,
            n_samples=n_samples,
            rank=rank,
            residual_floored=floored,
            mean=mean,
            metadata=dict(metadata or {}),
        )

    def with_shrinkage(self, shrinkage: float) -> LowRankCovariance:
        """The same fit shrunk toward isotropy by ``shrinkage`` in [0, 1]."""
        return replace(self, shrinkage=float(shrinkage))

    def with_normalization(self, normalization: str) -> LowRankCovariance:
        """The same fit scaled to det(St) = 1 ("det") or trace(St) = d ("trace")."""
        return replace(self, normalization=normalization)

    def with_rank(self, k: int) -> LowRankCovariance:
        """Keep only the top ``k`` directions; the dropped variance joins the isotropic residual."""
        if not 1 <= k <= self.k:
            raise ValueError(f"k must lie in [1, {self.k}] for this fit, got {k}")
        top = self.base_eigenvalues[:k]
        residual = max((self.trace - float(top.sum())) / (self.dim - k), self.base_residual)
        return replace(
            self,
            eigenvectors=self.eigenvectors[:, :k].contiguous(),
            base_eigenvalues=top.clamp(min=residual).contiguous(),
            base_residual=residual,
        )

    # ----------------------------------------------------------------- spectrum
    @property
    def dim(self) -> int:
        return self.eigenvectors.shape[0]

    @property
    def k(self) -> int:
        return self.eigenvectors.shape[1]

    @property
    def isotropic_variance(self) -> float:
        """t = trace(S) / d, the target of shrinkage."""
        return self.trace / self.dim

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Top-k eigenvalues of S_k after shrinkage."""
        g = self.shrinkage
        return (1 - g) * self.base_eigenvalues + g * self.isotropic_variance

    @property
    def residual_variance(self) -> float:
        """rho^2 after shrinkage: the variance in every direction outside the top k."""
        g = self.shrinkage
        return (1 - g) * self.base_residual + g * self.isotropic_variance

    @property
    def explained_variance(self) -> float:
        """Fraction of trace(S) carried by the top-k fitted eigenvalues."""
        return float(self.base_eigenvalues.sum()) / self.trace

    def logdet(self) -> float:
        """log det S_k, never det itself (it under- or overflows for image-sized d)."""
        return float(self.eigenvalues.log().sum()) + (self.dim - self.k) * math.log(self.residual_variance)

    @property
    def geometric_mean(self) -> float:
        """gm = det(S_k)^(1/d), the scale that makes St = S_k / gm have determinant 1."""
        return math.exp(self.logdet() / self.dim)

    @property
    def normalizer(self) -> float:
        """c in St = S_k / c: det(S_k)^(1/d) for "det", trace(S_k) / d for "trace"."""
        if self.normalization == "det":
            return self.geometric_mean
        total = float(self.eigenvalues.sum()) + (self.dim - self.k) * self.residual_variance
        return total / self.dim

    def logdet_normalized(self) -> float:
        """log det St: 0 for det normalization, d log(gm / c) <= 0 for trace (the ellipsoid's volume factor)."""
        return self.dim * math.log(self.geometric_mean / self.normalizer)

    @property
    def mu_min(self) -> float:
        gm = self.normalizer
        return min(float(self.eigenvalues.min()) if self.k else math.inf, self.residual_variance) / gm

    @property
    def mu_max(self) -> float:
        gm = self.normalizer
        return max(float(self.eigenvalues.max()) if self.k else 0.0, self.residual_variance) / gm

    # ----------------------------------------------------------------- metric and sampling
    def mahalanobis(self, delta: torch.Tensor) -> torch.Tensor:
        """sqrt(delta^T St^-1 delta) for a (C,H,W) delta or a batch (B,C,H,W)."""
        batched = delta.dim() > len(self.shape)
        flat = delta.reshape(-1, self.dim).to("cpu", torch.float64)
        rho2 = self.residual_variance
        proj = flat @ self.eigenvectors
        quad = flat.pow(2).sum(1) / rho2 + (proj.pow(2) * (1 / self.eigenvalues - 1 / rho2)).sum(1)
        dist = (self.normalizer * quad).clamp(min=0).sqrt()
        return dist if batched else dist[0]

    def sample(
        self, count: int, generator: torch.Generator, device: torch.device | str, dtype: torch.dtype
    ) -> torch.Tensor:
        """Draw ``count`` samples of N(0, St) in O(d k) each.

        The isotropic part is drawn first so that, for the same generator state, St = I reproduces
        the draws of N(0, I) exactly.
        """
        cache = self._device_cache(torch.device(device), dtype)
        gen_device = generator.device
        z = torch.randn((count, self.dim), generator=generator, device=gen_device, dtype=dtype).to(device)
        noise = z.mul_(cache["iso_scale"])
        if self.k:
            w = torch.randn((count, self.k), generator=generator, device=gen_device, dtype=dtype).to(device)
            noise.addmm_(w * cache["dir_scale"], cache["eigenvectors_t"])
        return noise.reshape(count, *self.shape)

    def _device_cache(self, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
        """Eigenvectors and scales cast once per (device, dtype) instead of once per batch."""
        key = (str(device), dtype)  # shrinkage and rank changes make a new object, with its own cache
        cache: dict[Any, dict[str, Any]] = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            gm = self.normalizer
            rho2 = self.residual_variance
            cache[key] = {
                "iso_scale": math.sqrt(rho2 / gm),
                "dir_scale": ((self.eigenvalues - rho2).clamp(min=0) / gm).sqrt().to(device, dtype),
                "eigenvectors_t": self.eigenvectors.T.contiguous().to(device, dtype),
            }
        return cache[key]

    def inverse_diagonal_max(self) -> float:
        """max_i (St^-1)_ii, which decides the largest l1 ball inside the ellipsoid."""
        rho2 = self.residual_variance
        diag = 1 / rho2 + self.eigenvectors.pow(2) @ (1 / self.eigenvalues - 1 / rho2)
        return float(diag.max()) * self.normalizer

    def l1_radius_factor(self) -> float:
        """r / R for the largest l1 ball of radius r inside the Mahalanobis ball of radius R.

        The l1 ball is the hull of +-r e_i, so it fits iff every vertex does (docs/MATH.md section 6).
        """
        return 1.0 / math.sqrt(self.inverse_diagonal_max())

    # ----------------------------------------------------------------- persistence
    def content_hash(self) -> str:
        """sha256 over the fitted numbers, so a profile can be identified by content."""
        h = hashlib.sha256()
        h.update(repr((self.shape, self.base_residual, self.trace, self.shrinkage)).encode())
        if self.normalization != "det":  # files written before the option existed keep their hash
            h.update(self.normalization.encode())
        h.update(self.base_eigenvalues.numpy().tobytes())
        h.update(self.eigenvectors.numpy().tobytes())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        """Plain metadata a reader needs without loading the tensors."""
        return {
            "shape": list(self.shape),
            "n_samples": self.n_samples,
            "k": self.k,
            "rank": self.rank,
            "shrinkage": self.shrinkage,
            "normalization": self.normalization,
            "explained_variance": self.explained_variance,
            "residual_variance": self.base_residual,
            "residual_floored": self.residual_floored,
            "trace": self.trace,
            "content_hash": self.content_hash(),
        }

    def save(self, path: str | Path) -> None:
        torch.save(
            {
                "format": "dsmooth-lowrank-covariance",
                "version": _FORMAT_VERSION,
                "summary": self.summary(),
                "eigenvectors": self.eigenvectors,
                "base_eigenvalues": self.base_eigenvalues,
                "mean": self.mean,
                "metadata": self.metadata,
            },
            Path(path),
        )

    @classmethod
    def load(cls, path: str | Path) -> LowRankCovariance:
        """Load a file written by :meth:`save`, checking its integrity."""
        try:
            blob = torch.load(Path(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupt or foreign file: say what was expected
            raise ValueError(f"{path} is not a readable covariance file ({type(exc).__name__}: {exc})") from exc
        if not isinstance(blob, dict) or blob.get("format") != "dsmooth-lowrank-covariance":
            raise ValueError(f"{path} is not a DSmooth covariance file")
        try:
            s = blob["summary"]
            tensors = [blob["eigenvectors"], blob["base_eigenvalues"]]
            if not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in tensors):
                raise TypeError("eigenvectors and eigenvalues must be float tensors")
            if not all(bool(torch.isfinite(t).all()) for t in tensors):
                raise ValueError("eigenvectors or eigenvalues hold NaN or inf")
            if blob["mean"] is not None and not isinstance(blob["mean"], torch.Tensor):
                raise TypeError("mean must be a tensor")
            if not isinstance(blob["metadata"], dict):
                raise TypeError("metadata must be a dict")
            cov = cls(
                shape=tuple(_integer(v, "shape") for v in s["shape"]),
                eigenvectors=tensors[0],
                base_eigenvalues=tensors[1],
                base_residual=_real(s["residual_variance"], "residual_variance"),
                trace=_real(s["trace"], "trace"),
                shrinkage=_real(s["shrinkage"], "shrinkage"),
                normalization=str(s.get("normalization", "det")),
                n_samples=_integer(s["n_samples"], "n_samples"),
                rank=_integer(s["rank"], "rank"),
                residual_floored=bool(s["residual_floored"]),
                mean=blob["mean"],
                metadata=blob["metadata"],
            )
            expected_hash = s["content_hash"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"{path} is not a valid covariance file: {what}") from None
        if cov.content_hash() != expected_hash:
            raise ValueError(f"{path} is corrupt: its content hash does not match its metadata")
        return cov


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must hold integers, got {value!r}")
    return value


def _real(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _spectrum(flat: torch.Tensor, mean: torch.Tensor) -> tuple[torch.Tensor, float, Callable[[int], torch.Tensor]]:
    """Eigenvalues of S = D^T D / (N - 1), descending, trace(S), and a function giving top-k eigenvectors.

    D is ``flat`` minus ``mean``. With N <= d this is the thin SVD of D obtained from the N x N Gram
    matrix D D^T; D is only ever held as float64 one column block at a time, so memory stays
    O(N^2 + d k) beyond the input, and the eigenvectors are only formed for the k kept.
    """
    n, d = flat.shape
    if n > d:
        centred = flat.to("cpu", torch.float64, copy=True).sub_(mean)
        scatter = centred.T @ centred
        evals, vectors = _eigh_descending(scatter)
        return evals / (n - 1), float(scatter.diagonal().sum()) / (n - 1), lambda k: vectors[:, :k].contiguous()
    gram = _gram(flat, mean)
    evals, left = _eigh_descending(gram)

    def top_vectors(k: int) -> torch.Tensor:
        # U = D^T V diag(evals)^-1/2, computed as (V^T D)^T block by block: MKL runs V^T D about twice
        # as fast as D^T V for a wide row-major D, and the result is written straight into (d, k).
        scaled_t = (left[:, :k] / evals[:k].sqrt()).T.contiguous()
        vectors = torch.empty(d, k, dtype=torch.float64)
        for start, block in _float64_blocks(flat, mean):
            vectors[start : start + block.shape[1]] = (scaled_t @ block).T
        return vectors

    return evals / (n - 1), float(gram.diagonal().sum()) / (n - 1), top_vectors


def _gram(flat: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """D D^T, accumulated over column blocks of D.

    Only the row blocks on and above the diagonal are multiplied and the rest is mirrored, which
    saves up to half of the N^2 d multiply-adds, the largest cost of a fit at ImageNet size.
    """
    n = flat.shape[0]
    rows = [slice(start, start + _GRAM_ROWS) for start in range(0, n, _GRAM_ROWS)]
    pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i:]]
    gram = torch.zeros(n, n, dtype=torch.float64)
    for _, block in _float64_blocks(flat, mean):
        for a, b in pairs:
            gram[a, b].addmm_(block[a], block[b].T)
    for a, b in pairs:
        if a != b:
            gram[b, a] = gram[a, b].T
    return gram


def _float64_blocks(flat: torch.Tensor, mean: torch.Tensor | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """Column blocks of ``flat`` as fresh CPU float64 copies (centred when ``mean`` is given).

    Converting per block instead of copying the whole (N, d) input to float64 saves 8 N d bytes,
    1.2 GB for a thousand ImageNet-sized perturbations.
    """
    width = max(1, _BLOCK_ELEMENTS // flat.shape[0])
    for start in range(0, flat.shape[1], width):
        block = flat[:, start : start + width].to("cpu", torch.float64, copy=True)
        yield start, block if mean is None else block.sub_(mean[start : start + width])


def _eigh_descending(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (clamped at 0) and eigenvectors of a symmetric PSD matrix, largest first.

    LAPACK's tridiagonal reduction synchronises its threads at every one of its N steps; on a CPU
    shared with other work each synchronisation waits for a descheduled thread, which made a
    1000 x 1000 eigh take 12-16 s with 2 threads against 0.35 s with one. It runs single-threaded;
    the lock keeps concurrent fits from restoring each other's thread count wrongly.
    """
    with _THREAD_LOCK:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            evals, vectors = torch.linalg.eigh(matrix)
        finally:
            torch.set_num_threads(threads)
    return evals.flip(0).clamp(min=0), vectors.flip(1)
