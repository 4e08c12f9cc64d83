"""Monte Carlo prediction and certification of the smoothed classifier (docs/MATH.md section 4).

``certify`` is Cohen's CERTIFY (the paper's DCERT) and ``predict`` is Cohen's PREDICT; the
smoothing distribution object supplies the noise and the radius, so the same two functions serve
RandSmooth, LSmooth and DSmooth.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from dsmooth_core.contract import (
    check_alpha,
    check_count,
    check_finite_logits,
    check_generator,
    check_pixels,
    model_contract,
)
from dsmooth_core.device import is_out_of_memory, model_device
from dsmooth_core.layout import in_layout, input_format
from dsmooth_core.noise import SmoothingNoise, method_class
from dsmooth_core.progress import ProgressCallback, report
from dsmooth_core.stats import clopper_pearson_lower, top_two_significant

ABSTAIN = -1


@dataclass(frozen=True)
class Certificate:
    """The outcome of one certification, with everything needed to interpret it."""

    prediction: int  # ABSTAIN when no class is certified
    radius: float  # in ``metric``; 0 when abstaining
    metric: str
    method: str  # the method's key ("dsmooth", "randsmooth", "lsmooth"); method_name is its display name
    p_lower: float
    counts_selection: tuple[int, ...]
    counts_estimation: tuple[int, ...]
    n0: int
    n: int
    alpha: float
    radius_ceiling: float  # the largest radius n samples can certify at this alpha
    seconds: float
    noise_identity: tuple[str, float, str] | tuple[()] = ()  # the noise's identity(): (key, sigma, covariance)

    @property
    def method_name(self) -> str:
        """The method's display name (DSmooth, RandSmooth, LSmooth)."""
        return method_class(self.method).name

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN

    @property
    def selected(self) -> int:
        """The class the n0 selection draws chose, whose probability was bounded (the prediction unless abstained)."""
        return _first_argmax(self.counts_selection)

    @property
    def selected_votes(self) -> int:
        """Estimation draws that voted for the selected class (of ``n``)."""
        return self.counts_estimation[self.selected]


def _first_argmax(counts: tuple[int, ...] | list[int]) -> int:
    """Index of the largest count, the first of ties (as ``argmax``)."""
    return max(range(len(counts)), key=counts.__getitem__)


class _VoteCounter:
    """Counts the base model's votes under noise, in batches, with progress and OOM recovery."""

    def __init__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        noise: SmoothingNoise,
        batch_size: int,
        generator: torch.Generator,
        progress: ProgressCallback | None,
        total: int,
    ) -> None:
        self.model = model
        self.device = model_device(model)
        self.x = x.to(self.device, torch.float32).unsqueeze(0)
        self.layout = input_format(model)
        self.noise = noise
        self.batch_size = batch_size
        self.generator = generator
        self.progress = progress
        self.total = total
        self.done = 0

    @torch.inference_mode()
    def count(self, num: int) -> torch.Tensor:
        counts: torch.Tensor | None = None
        remaining = num
        while remaining:
            size = min(self.batch_size, remaining)
            try:
                noise = self.noise.sample(size, self.x.shape[1:], self.generator, self.device)
                # the same values in the model's layout, so only float near-ties can change a vote
                logits = self.model(in_layout(noise.add_(self.x), self.layout))
            except RuntimeError as exc:
                if not is_out_of_memory(exc) or self.batch_size == 1:
                    raise
                # Draws from a failed batch are discarded unseen, so the estimate stays unbiased.
                self.batch_size //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            check_finite_logits(self.model, logits)  # NaN would argmax to class 0: never a vote
            votes = torch.bincount(logits.argmax(dim=1), minlength=logits.shape[1]).cpu()
            counts = votes if counts is None else counts + votes
            remaining -= size
            self.done += size
            report(self.progress, self.done, self.total)
        assert counts is not None
        return counts


def _validate(
    x: object, noise: SmoothingNoise, alpha: float | None, batch_size: object, generator: object, **sizes: object
) -> None:
    """Refuse bad arguments up front with messages that name them, before any model call (alpha None: no level)."""
    if not isinstance(noise, SmoothingNoise):
        raise TypeError(f"noise must be a SmoothingNoise (e.g. IsotropicGaussian(0.25)), got {type(noise).__name__}")
    if alpha is not None:
        check_alpha(alpha)
    check_count("batch_size", batch_size)
    for name, value in sizes.items():
        check_count(name, value)
    check_generator(generator)
    check_pixels(x)


# (id(noise), image shape) of the noises an enclosing certification_checks has checked
_NOISE_CHECKED: ContextVar[frozenset[tuple[int, tuple[int, ...]]]] = ContextVar("dsmooth_noise", default=frozenset())


@contextmanager
def certification_checks(model: torch.nn.Module, noise: SmoothingNoise, image_shape: tuple[int, ...]) -> Iterator[None]:
    """The model contract and the noise's checks (shape, finite draws), once for every certify call inside.

    A loop of certificates (a command's images, tuning's grid, an experiment's settings) opens this once;
    the calls inside skip the repeat, as :func:`~dsmooth_core.contract.model_contract` does for the model.
    """
    shape = tuple(image_shape)
    key = (id(noise), shape)
    with model_contract(model, shape):
        checked = _NOISE_CHECKED.get()
        if key in checked:
            yield
            return
        noise.check_shape(shape)
        noise.check_finite_draws(shape, model_device(model))
        token = _NOISE_CHECKED.set(checked | {key})
        try:
            yield
        finally:
            _NOISE_CHECKED.reset(token)


def predict(
    model: torch.nn.Module,
    x: torch.Tensor,
    noise: SmoothingNoise,
    n: int,
    alpha: float,
    batch_size: int,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
) -> int:
    """The smoothed prediction, or ABSTAIN when the top two classes are not separated at level alpha."""
    _validate(x, noise, alpha, batch_size, generator, n=n)
    with certification_checks(model, noise, tuple(x.shape)):
        counts = _VoteCounter(model, x, noise, batch_size, generator, progress, n).count(n)
    return predict_from_votes(tuple(counts.tolist()), alpha)


def predict_votes(
    model: torch.nn.Module,
    x: torch.Tensor,
    noise: SmoothingNoise,
    n: int,
    batch_size: int,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
) -> tuple[int, ...]:
    """PREDICT's n votes, which do not depend on alpha: several levels share one set of draws.

    ``predict_from_votes(predict_votes(...), alpha)`` is exactly ``predict(..., alpha, ...)`` with the same generator.
    """
    _validate(x, noise, None, batch_size, generator, n=n)
    with certification_checks(model, noise, tuple(x.shape)):
        return tuple(_VoteCounter(model, x, noise, batch_size, generator, progress, n).count(n).tolist())


def predict_from_votes(counts: tuple[int, ...], alpha: float) -> int:
    """PREDICT's answer from its votes: the top class, or ABSTAIN when it does not beat the runner-up at alpha."""
    check_alpha(alpha)
    order = sorted(range(len(counts)), key=lambda c: -counts[c])  # stable: the first of tied classes leads
    count_a = counts[order[0]]
    count_b = counts[order[1]] if len(counts) > 1 else 0
    return order[0] if top_two_significant(count_a, count_b, alpha) else ABSTAIN


def certify(
    model: torch.nn.Module,
    x: torch.Tensor,
    noise: SmoothingNoise,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
) -> Certificate:
    """Select the top class on n0 draws, then bound its probability on n fresh draws."""
    _validate(x, noise, alpha, batch_size, generator, n0=n0, n=n)
    start = time.perf_counter()
    with certification_checks(model, noise, tuple(x.shape)):
        counter = _VoteCounter(model, x, noise, batch_size, generator, progress, n0 + n)
        selection = counter.count(n0)
        estimation = counter.count(n)
    return _conclude(noise, selection.tolist(), estimation.tolist(), alpha, time.perf_counter() - start)


def at_level(certificate: Certificate, noise: SmoothingNoise, alpha: float) -> Certificate:
    """The certificate the same votes give at another failure rate.

    The votes do not depend on alpha, so this is exactly what ``certify`` returns at ``alpha`` with
    the same generator: an alpha ablation draws the noise once. The noise must be the certificate's
    own (same method, sigma and covariance): another sigma would rescale the radius of these votes.
    """
    check_same_noise(certificate, noise, "re-levelled")
    check_alpha(alpha)
    return _conclude(
        noise, list(certificate.counts_selection), list(certificate.counts_estimation), alpha, certificate.seconds
    )


def check_same_noise(certificate: Certificate, noise: SmoothingNoise, use: str) -> None:
    """Refuse a noise other than the one whose votes the certificate counts (method, sigma, covariance)."""
    if not isinstance(noise, SmoothingNoise):
        raise TypeError(f"noise must be a SmoothingNoise, got {type(noise).__name__}")
    if noise.key != certificate.method:
        raise ValueError(f"a {certificate.method_name} certificate cannot be {use} with {noise.name} noise")
    if certificate.noise_identity and noise.identity() != certificate.noise_identity:
        mine, theirs = certificate.noise_identity, noise.identity()
        what = f"sigma {mine[1]:g}, not {theirs[1]:g}" if mine[1] != theirs[1] else "another covariance"
        raise ValueError(f"this {certificate.method_name} certificate was made with {what}; it cannot be {use} with it")


def _conclude(
    noise: SmoothingNoise, selection: list[int], estimation: list[int], alpha: float, seconds: float
) -> Certificate:
    """Bound the selected class's probability from the estimation votes and turn it into a radius."""
    n0, n = sum(selection), sum(estimation)
    top_class = _first_argmax(selection)
    p_lower = clopper_pearson_lower(estimation[top_class], n, alpha)
    certified = p_lower > 0.5
    return Certificate(
        prediction=top_class if certified else ABSTAIN,
        radius=noise.radius(p_lower) if certified else 0.0,
        metric=noise.metric,
        method=noise.key,
        p_lower=p_lower,
        counts_selection=tuple(selection),
        counts_estimation=tuple(estimation),
        n0=n0,
        n=n,
        alpha=alpha,
        radius_ceiling=radius_ceiling(noise, n, alpha),
        seconds=seconds,
        noise_identity=noise.identity(),
    )


def radius_ceiling(noise: SmoothingNoise, n: int, alpha: float) -> float:
    """The radius when all n votes go to the top class: p_lower = alpha ** (1 / n).

    It is 0 when even a unanimous vote cannot push the bound above 1/2 (n too small for alpha).
    """
    best = alpha ** (1.0 / n)
    return noise.radius(best) if best > 0.5 else 0.0
