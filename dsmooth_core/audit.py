"""Auditing a certificate: search its certified region for a perturbation that changes the prediction.

A certificate is a lower bound on the smoothed classifier's robust radius; a perturbation that
provably changes the smoothed prediction is an upper bound. The audit runs PGD on the Monte Carlo
soft smoothed classifier (the average softmax over m noise draws, Salman et al. 2019) inside a
budget ball in the certificate's own metric, and judges every candidate with PREDICT on fresh
draws. Bisection over the budget then gives the smallest radius at which the attack succeeded: the
**empirical bound**. A success at a distance below the certified radius is a **violation**. Where a
model is so confident under noise that the soft classifier's gradient underflows, the step follows
the mean logit margin instead.

What it can and cannot show: a violation refutes the certificate (up to the audit's and the
certificate's own failure probabilities); "consistent" only says this attack found nothing inside
the region, never that the certificate is right. "Inconclusive" says the audit could not look: its
PREDICT test, at n draws and level alpha / max_tests, cannot name any class even when every draw
agrees (so no attack could succeed), or it abstained on every candidate it judged.

Statistics: each candidate is judged by PREDICT at level ``alpha / max_tests``, so by Bonferroni
the chance that any reported success is a Monte Carlo fluke is at most ``alpha`` for the whole
audit. Perturbations are not clipped to keep ``x + delta`` in ``[0, 1]``: a certificate promises
the prediction for every delta in its region (MATH.md section 1), and clipping would break the
exact projections.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from dsmooth_core.certify import ABSTAIN, Certificate, check_same_noise, predict
from dsmooth_core.contract import check_alpha, check_count, check_finite_logits, model_contract
from dsmooth_core.device import model_device
from dsmooth_core.noise import AnisotropicGaussian, SmoothingNoise
from dsmooth_core.progress import ProgressCallback, report
from dsmooth_core.projections import Whitening, project_l1, project_l2
from dsmooth_core.stats import top_two_significant

CONSISTENT = "consistent"
VIOLATION = "violation"
INCONCLUSIVE = "inconclusive"
# The first budget lies this fraction inside the certified radius, which is an open ball.
_INSIDE = 1.0 - 1e-6
# Fraction of coordinates an l1 step moves: steepest ascent in l1 is sparse.
_L1_STEP_FRACTION = 0.01


@dataclass(frozen=True)
class AuditSettings:
    """How hard the audit searches and how sure it must be before it reports a success."""

    n: int = 1000  # PREDICT draws per candidate
    alpha: float = 0.001  # family-wise: the chance that any reported success is a Monte Carlo fluke
    draws: int = 32  # noise draws m per gradient of the soft smoothed classifier
    steps: int = 20  # PGD steps per budget
    growth_steps: int = 7  # budget doublings past the certified radius before giving up (l1 gaps are wide)
    bisection_steps: int = 8
    tolerance: float = 0.01  # stop bisecting when the bracket is this fraction of its upper end
    batch_size: int = 400

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        for name in ("n", "draws", "steps", "batch_size"):
            check_count(name, getattr(self, name))
        if self.growth_steps < 0 or self.bisection_steps < 0:
            raise ValueError("growth_steps and bisection_steps must be >= 0")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must lie strictly between 0 and 1, got {self.tolerance}")

    @property
    def max_tests(self) -> int:
        """Most PREDICT calls one audit makes: the certified radius, the doublings, the bisection."""
        return 1 + self.growth_steps + self.bisection_steps

    @property
    def level(self) -> float:
        """Each PREDICT's level (Bonferroni over the audit's candidates)."""
        return self.alpha / self.max_tests

    def reach(self) -> AuditReach:
        """Whether this budget can find a violation at all, and what would let it."""
        return AuditReach.of(self)


@dataclass(frozen=True)
class AuditReach:
    """What PREDICT at the audit's n and per-candidate level can see, before any draw is made.

    PREDICT names a class only when a two-sided binomial test separates the top two vote counts.
    Its smallest p-value, all n draws for one class, is 2^(1 - n); when that exceeds alpha / max_tests
    PREDICT abstains on every candidate, so the attack cannot succeed and finding nothing means nothing.
    """

    able: bool
    votes_needed: int | None  # fewest of the n draws a new class must win (the rest to one other class)
    min_n: int  # smallest n that can name a class at this alpha and number of candidates
    min_alpha: float  # smallest family-wise alpha that can at this n (>= 1: none can)
    n: int
    alpha: float
    max_tests: int

    @classmethod
    def of(cls, settings: AuditSettings) -> AuditReach:
        n, level = settings.n, settings.level
        # from 2^(1 - n) <= alpha / max_tests (in logs: the level itself may underflow), then exact at the edge
        min_n = max(1, math.ceil(1 - math.log2(settings.alpha) + math.log2(settings.max_tests)))
        while min_n > 1 and top_two_significant(min_n - 1, 0, level):
            min_n -= 1
        while not top_two_significant(min_n, 0, level):
            min_n += 1
        votes_needed = None
        if top_two_significant(n, 0, level):
            low, high = n // 2, n  # the p-value falls as the split grows more lopsided
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (low, middle) if top_two_significant(middle, n - middle, level) else (middle, high)
            votes_needed = high
        return cls(
            able=votes_needed is not None,
            votes_needed=votes_needed,
            min_n=min_n,
            min_alpha=settings.max_tests * 2.0 ** (1 - n),
            n=n,
            alpha=settings.alpha,
            max_tests=settings.max_tests,
        )

    def reason(self) -> str:
        """Why the audit cannot look, and the smallest change that lets it; empty when it can."""
        if self.able:
            return ""
        fix = f"use n >= {self.min_n}"
        if self.min_alpha < 1:
            fix += f" or alpha >= {_rounded_up(self.min_alpha)}"
        return (
            f"PREDICT with n = {self.n} draws at level alpha / {self.max_tests} candidates = "
            f"{self.alpha / self.max_tests:.3g} cannot name any class even when all draws agree, so no "
            f"perturbation can be found; {fix}"
        )

    def share(self) -> str:
        """The vote share a new class needs before PREDICT names it, for messages."""
        return "" if self.votes_needed is None else f"{self.votes_needed}/{self.n} draws"


@dataclass(frozen=True)
class AuditResult:
    """The verdict, both bounds in the certificate's metric, and the perturbation behind the upper one."""

    verdict: str  # CONSISTENT, VIOLATION or INCONCLUSIVE
    method: str
    metric: str
    certified_class: int
    certified_radius: float  # lower bound on the robust radius (the certificate's claim)
    empirical_bound: float  # upper bound: distance of the smallest successful perturbation; inf if none
    perturbation: torch.Tensor | None  # (C, H, W) pixel units, the one at empirical_bound
    new_prediction: int | None  # PREDICT's class at x + perturbation
    searched_up_to: float  # the largest budget tried
    predict_calls: int
    alpha: float
    seconds: float
    reason: str = ""  # why an INCONCLUSIVE audit could not look, and what would let it

    @property
    def violated(self) -> bool:
        return self.verdict == VIOLATION

    @property
    def inconclusive(self) -> bool:
        return self.verdict == INCONCLUSIVE


class _Region:
    """The budget ball of one metric, searched in coordinates u where it is an l2 or l1 ball."""

    def __init__(self, noise: SmoothingNoise) -> None:
        self.metric = noise.metric
        self.whitening = Whitening(noise.covariance) if isinstance(noise, AnisotropicGaussian) else None
        if self.metric not in ("l2", "l1", "mahalanobis"):
            raise ValueError(f"no audit for certificates in the {self.metric} metric")

    def to_pixels(self, u: torch.Tensor) -> torch.Tensor:
        return self.whitening.color(u).to(u.dtype) if self.whitening is not None else u

    def project(self, u: torch.Tensor, budget: float) -> torch.Tensor:
        return project_l1(u, budget) if self.metric == "l1" else project_l2(u, budget)

    def ascent_step(self, grad: torch.Tensor, size: float) -> torch.Tensor:
        """The steepest-ascent step of length ``size`` in the search norm (l1: the top coordinates)."""
        if self.metric != "l1":
            scaled = grad.double() / grad.abs().max().double().clamp(min=1e-300)  # a norm that cannot underflow
            return (scaled * (size / torch.linalg.vector_norm(scaled).clamp(min=1e-300))).to(grad.dtype)
        magnitude = grad.abs().reshape(-1)
        count = max(1, int(_L1_STEP_FRACTION * magnitude.numel()))
        threshold = magnitude.topk(count).values[-1]
        mask = (grad.abs() >= threshold).to(grad.dtype)
        return grad.sign() * mask * (size / mask.sum())


class _Shifted(torch.nn.Module):
    """f(. + delta): PREDICT at x on this model is PREDICT at x + delta, which may leave [0, 1]."""

    def __init__(self, model: torch.nn.Module, delta: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("delta", delta.to(model_device(model)))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch + self.delta)


class _Auditor:
    """One audit's state: the PGD iterate carried from budget to budget, progress, and PREDICT calls made."""

    def __init__(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        noise: SmoothingNoise,
        label: int,
        settings: AuditSettings,
        generator: torch.Generator,
        progress: ProgressCallback | None,
    ) -> None:
        self.model = model
        self.device = model_device(model)
        self.x = x.to(torch.float32)
        self.noise = noise
        self.label = label
        self.settings = settings
        self.generator = generator
        self.region = _Region(noise)
        self.u = torch.zeros_like(self.x)
        self.progress = progress
        self.unit = settings.steps + settings.n
        self.total = settings.max_tests * self.unit
        self.done = 0
        self.calls = 0
        self.decided = 0  # PREDICT calls that named a class rather than abstaining

    def losses(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two losses to ascend on the same m draws: -log of the soft smoothed classifier's probability
        of the certified class, and the mean logit margin of the best other class over it."""
        draws = self.noise.sample(self.settings.draws, tuple(self.x.shape), self.generator, self.device)
        logits = self.model((self.x + delta).to(self.device).unsqueeze(0) + draws)
        check_finite_logits(self.model, logits)  # NaN would steer the search silently
        logits = logits.double()
        # log of the mean softmax, through logsumexp so a confident model's gradient does not underflow early
        log_probs = torch.log_softmax(logits, dim=1)[:, self.label]
        soft = math.log(len(log_probs)) - torch.logsumexp(log_probs, dim=0)
        others = logits.index_fill(1, torch.tensor([self.label], device=logits.device), float("-inf"))
        margin = (others.amax(dim=1) - logits[:, self.label]).mean()
        return soft, margin

    def gradient(self, u: torch.Tensor) -> torch.Tensor:
        """The soft loss's gradient; the margin's where that one underflows (a model confident under noise)."""
        u = u.detach().requires_grad_(True)
        with torch.enable_grad():
            soft, margin = self.losses(self.region.to_pixels(u))
            (grad,) = torch.autograd.grad(soft, u, retain_graph=True)
            # Near float underflow a gradient's direction is noise (subnormals keep few bits).
            if not (torch.isfinite(grad).all() and float(grad.abs().max()) > 1e3 * torch.finfo(grad.dtype).tiny):
                (grad,) = torch.autograd.grad(margin, u)
        return grad

    def pgd(self, budget: float) -> torch.Tensor:
        """PGD from the last iterate (projected to this budget), with Madry et al.'s step 2.5 budget / steps."""
        steps = self.settings.steps
        u = self.region.project(self.u, budget)
        for _ in range(steps):
            grad = self.gradient(u)
            u = self.region.project(u + self.region.ascent_step(grad, 2.5 * budget / steps), budget)
            self._advance(1)
        self.u = u
        return self.region.to_pixels(u).detach()

    def judge(self, delta: torch.Tensor) -> int:
        """PREDICT on fresh draws at the Bonferroni level."""
        s = self.settings
        base = self.done
        self.calls += 1

        def forward(done: int, total: int) -> None:
            self._report(base + done)

        prediction = predict(
            _Shifted(self.model, delta),
            self.x,
            self.noise,
            s.n,
            s.alpha / s.max_tests,
            s.batch_size,
            self.generator,
            forward,
        )
        self._advance(s.n)
        self.decided += prediction != ABSTAIN
        return prediction

    def attempt(self, budget: float) -> tuple[torch.Tensor, int] | None:
        """The perturbation and its new class if the attack changes the prediction within ``budget``."""
        delta = self.pgd(budget)
        prediction = self.judge(delta)
        return (delta, prediction) if prediction not in (ABSTAIN, self.label) else None

    def _advance(self, units: int) -> None:
        self.done += units
        self._report(self.done)

    def _report(self, done: int) -> None:
        report(self.progress, min(done, self.total), self.total)


def audit(
    model: torch.nn.Module,
    x: torch.Tensor,
    noise: SmoothingNoise,
    certificate: Certificate,
    settings: AuditSettings,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
) -> AuditResult:
    """Search for a perturbation inside ``certificate``'s region that changes the smoothed prediction.

    ``noise`` must be the distribution the certificate was computed with. The search tries the
    certified radius, doubles the budget until the attack succeeds (at most ``growth_steps`` times),
    then bisects between the largest failed and the smallest successful budget. A budget whose
    PREDICT cannot name any class (``settings.reach()``) is not run: the verdict is INCONCLUSIVE.
    """
    if certificate.abstained:
        raise ValueError("an abstention certifies nothing, so there is nothing to audit")
    check_same_noise(certificate, noise, "audited")
    if not (math.isfinite(certificate.radius) and certificate.radius > 0):
        raise ValueError(f"the certified radius must be positive and finite to audit it, got {certificate.radius}")
    # eval mode for the PGD gradients, so they and PREDICT judge one fixed classifier (each PREDICT runs on a
    # fresh shifted wrapper, so it still checks its own contract: about 15 ms against its n forward passes)
    radius = certificate.radius
    reach = settings.reach()
    if not reach.able:
        report(progress, 1, 1)
        return _unseen(certificate, settings, reach.reason(), searched=0.0, calls=0, seconds=0.0)
    with model_contract(model, tuple(x.shape), x.unsqueeze(0)):
        start = time.perf_counter()
        auditor = _Auditor(model, x, noise, certificate.prediction, settings, generator, progress)

        def distance(delta: torch.Tensor) -> float:
            return float(noise.distance(delta))

        failed, budget = 0.0, radius * _INSIDE
        found = auditor.attempt(budget)
        doublings = 0
        while found is None and doublings < settings.growth_steps:
            failed, budget = budget, radius * 2 ** (doublings + 1)
            found = auditor.attempt(budget)
            doublings += 1
        searched = budget
        for _ in range(settings.bisection_steps if found is not None else 0):
            best = distance(found[0])
            if best - failed <= settings.tolerance * best:
                break
            budget = (failed + best) / 2
            attempt = auditor.attempt(budget)
            if attempt is None:
                failed = budget
            else:
                found = attempt
        report(progress, auditor.total, auditor.total)
        seconds = time.perf_counter() - start
        if found is None and not auditor.decided:
            reason = (
                f"PREDICT abstained on all {auditor.calls} candidates (it needs {reach.share()} for one class "
                f"at n = {settings.n}), so the audit saw no prediction at all; raise n"
            )
            return _unseen(certificate, settings, reason, searched=searched, calls=auditor.calls, seconds=seconds)
        bound = distance(found[0]) if found is not None else math.inf
        return AuditResult(
            verdict=VIOLATION if bound < radius else CONSISTENT,
            method=certificate.method_name,
            metric=certificate.metric,
            certified_class=certificate.prediction,
            certified_radius=radius,
            empirical_bound=bound,
            perturbation=found[0].cpu() if found is not None else None,
            new_prediction=found[1] if found is not None else None,
            searched_up_to=searched,
            predict_calls=auditor.calls,
            alpha=settings.alpha,
            seconds=seconds,
        )


def _rounded_up(value: float) -> str:
    """``value`` to three significant digits, rounded up, so the bound a message names is enough."""
    step = 10.0 ** (math.floor(math.log10(value)) - 2)
    return f"{math.ceil(value / step) * step:.3g}" if step > 0 else repr(value)  # subnormal: exact


def _unseen(
    certificate: Certificate, settings: AuditSettings, reason: str, *, searched: float, calls: int, seconds: float
) -> AuditResult:
    """The INCONCLUSIVE result of an audit that could not look: no bound, nothing refuted or supported."""
    return AuditResult(
        verdict=INCONCLUSIVE,
        method=certificate.method,
        metric=certificate.metric,
        certified_class=certificate.prediction,
        certified_radius=certificate.radius,
        empirical_bound=math.inf,
        perturbation=None,
        new_prediction=None,
        searched_up_to=searched,
        predict_calls=calls,
        alpha=settings.alpha,
        seconds=seconds,
        reason=reason,
    )
