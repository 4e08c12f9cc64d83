"""The audit against closed-form smoothed classifiers (MATH.md section 7) and a deliberately wrong certificate.

For a linear f(x) = [w^T x > b] and N(0, C) noise, P(f(x + e) = 1) = Phi((w^T x - b) / sqrt(w^T C w)),
so the smoothed classifier's boundary is the hyperplane itself and its exact robust radius is the
distance to it in the certificate's metric: (w^T x - b) / ||w||_2 (RandSmooth) and
(w^T x - b) / sqrt(w^T St w) (DSmooth). For [x_0 > t] with Laplace noise it is x_0 - t in l1.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dsmooth_core import (
    AnisotropicGaussian,
    Cancelled,
    IsotropicGaussian,
    Laplace,
    LowRankCovariance,
    certify,
)
from dsmooth_core.audit import CONSISTENT, VIOLATION, AuditSettings, audit
from dsmooth_core.certify import ABSTAIN
from tests.oracles import LinearClassifier, PixelThreshold, anisotropic_perturbations, dense_normalized

SHAPE = (3, 4, 4)
SETTINGS = AuditSettings(n=20_000, alpha=0.001, draws=32, steps=10, batch_size=20_000, tolerance=0.005)


class InflatedGaussian(IsotropicGaussian):
    """A wrong certificate on purpose: RandSmooth's radius times three."""

    def radius(self, p_lower: float) -> float:
        return 3 * super().radius(p_lower)


def _linear(distance_l2: float) -> tuple[LinearClassifier, torch.Tensor, torch.Tensor]:
    """A linear model whose boundary lies ``distance_l2`` away (in l2) from the grey image x, class 1 at x."""
    w = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.full(SHAPE, 0.5)
    b = float((w * x).sum()) - distance_l2 * float(w.norm())
    return LinearClassifier(w, b), x, w


def _certify(model, x, noise, seed: int):
    cert = certify(model, x, noise, 100, 2000, 0.001, 2000, torch.Generator().manual_seed(seed))
    assert cert.prediction == 1
    return cert


def test_randsmooth_bound_lands_on_the_exact_l2_radius():
    model, x, _ = _linear(0.5)
    noise = IsotropicGaussian(0.25)
    cert = _certify(model, x, noise, seed=0)
    result = audit(model, x, noise, cert, SETTINGS, torch.Generator().manual_seed(1))
    assert result.verdict == CONSISTENT and result.metric == "l2"
    assert cert.radius < 0.5 <= result.empirical_bound * (1 + 1e-6)
    assert result.empirical_bound <= 0.5 * 1.03
    assert result.new_prediction == 0
    assert float(result.perturbation.norm()) == pytest.approx(result.empirical_bound, rel=1e-5)


@pytest.mark.parametrize("normalization", ["det", "trace"])
def test_dsmooth_bound_lands_on_the_exact_mahalanobis_radius(normalization):
    model, x, w = _linear(0.3)
    data = 0.05 * anisotropic_perturbations(60, SHAPE, seed=2)
    cov = LowRankCovariance.fit(data, k=3, normalization=normalization)
    st = torch.from_numpy(dense_normalized(cov))
    flat_w = w.reshape(-1)
    margin = float(flat_w @ x.reshape(-1).double()) - model.b
    exact = margin / math.sqrt(float(flat_w @ st @ flat_w))
    noise = AnisotropicGaussian(exact / 2, cov)
    cert = _certify(model, x, noise, seed=0)
    result = audit(model, x, noise, cert, SETTINGS, torch.Generator().manual_seed(1))
    assert result.verdict == CONSISTENT and result.metric == "mahalanobis"
    assert cert.radius < exact <= result.empirical_bound * (1 + 1e-6) <= exact * 1.03
    assert float(cov.mahalanobis(result.perturbation)) == pytest.approx(result.empirical_bound, rel=1e-5)


def test_lsmooth_bound_lands_on_the_exact_l1_radius():
    model, x = PixelThreshold(0.2), torch.full(SHAPE, 0.5)
    noise = Laplace(0.1)
    cert = _certify(model, x, noise, seed=0)
    result = audit(model, x, noise, cert, SETTINGS, torch.Generator().manual_seed(1))
    assert result.verdict == CONSISTENT and result.metric == "l1"
    assert cert.radius < 0.3 <= result.empirical_bound * (1 + 1e-6) <= 0.3 * 1.03


@pytest.mark.parametrize("seed", range(4))
def test_correct_certificates_are_never_reported_as_violated(seed):
    model, x, _ = _linear(0.4)
    noise = IsotropicGaussian(0.25)
    cert = _certify(model, x, noise, seed=10 + seed)
    fast = AuditSettings(n=5000, steps=5, bisection_steps=2, batch_size=5000)
    result = audit(model, x, noise, cert, fast, torch.Generator().manual_seed(seed))
    assert not result.violated
    assert result.empirical_bound >= cert.radius


def test_a_three_times_too_large_radius_is_a_violation():
    model, x, w = _linear(0.5)
    wrong = InflatedGaussian(0.25)
    cert = _certify(model, x, wrong, seed=0)
    assert cert.radius > 1.0  # three times a radius below 0.5
    result = audit(model, x, wrong, cert, SETTINGS, torch.Generator().manual_seed(1))
    assert result.verdict == VIOLATION and result.violated
    assert result.empirical_bound < cert.radius
    # Independent check: the perturbation really crosses the hyperplane, so g changed.
    assert float((w * (x + result.perturbation).double()).sum()) < model.b
    # The same audit of the honest certificate on the same image finds nothing inside it.
    honest_noise = IsotropicGaussian(0.25)
    honest_cert = _certify(model, x, honest_noise, seed=0)
    honest = audit(model, x, honest_noise, honest_cert, SETTINGS, torch.Generator().manual_seed(1))
    assert honest.verdict == CONSISTENT


def test_no_upper_bound_within_the_search_is_reported_as_infinite():
    # A constant classifier never changes its prediction.
    x = torch.full(SHAPE, 0.5)
    constant = LinearClassifier(torch.zeros(SHAPE, dtype=torch.float64), -1.0)
    noise = IsotropicGaussian(0.25)
    cert = _certify(constant, x, noise, seed=0)
    quick = AuditSettings(n=200, steps=2, growth_steps=1, batch_size=200)
    result = audit(constant, x, noise, cert, quick, torch.Generator().manual_seed(0))
    assert result.verdict == CONSISTENT and result.empirical_bound == math.inf and result.perturbation is None
    assert result.searched_up_to == pytest.approx(2 * cert.radius)
    assert result.predict_calls == 2


def test_refuses_what_it_cannot_audit():
    model, x, _ = _linear(0.5)
    noise = IsotropicGaussian(0.25)
    cert = _certify(model, x, noise, seed=0)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="cannot be audited"):
        audit(model, x, Laplace(0.1), cert, SETTINGS, gen)
    abstained = certify(model, x, noise, 1, 1, 0.001, 1, gen)
    assert abstained.prediction == ABSTAIN
    with pytest.raises(ValueError, match="abstention"):
        audit(model, x, noise, abstained, SETTINGS, gen)
    with pytest.raises(ValueError, match="alpha"):
        AuditSettings(alpha=1.5)


def test_cancel_and_progress():
    model, x, _ = _linear(0.5)
    noise = IsotropicGaussian(0.25)
    cert = _certify(model, x, noise, seed=0)
    seen: list[tuple[int, int]] = []
    quick = AuditSettings(n=500, steps=3, bisection_steps=2, batch_size=100)
    audit(model, x, noise, cert, quick, torch.Generator().manual_seed(0), progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and all(a[0] <= b[0] for a, b in itertools.pairwise(seen))
    with pytest.raises(Cancelled):
        audit(model, x, noise, cert, quick, torch.Generator().manual_seed(0), progress=lambda d, t: d > 50)


def test_same_generator_same_result():
    model, x, _ = _linear(0.5)
    noise = IsotropicGaussian(0.25)
    cert = _certify(model, x, noise, seed=0)
    quick = AuditSettings(n=1000, steps=3, bisection_steps=3, batch_size=1000)
    a = audit(model, x, noise, cert, quick, torch.Generator().manual_seed(5))
    b = audit(model, x, noise, cert, quick, torch.Generator().manual_seed(5))
    assert a.empirical_bound == b.empirical_bound and torch.equal(a.perturbation, b.perturbation)


def test_a_model_confident_under_noise_is_still_attacked():
    """Logits scaled by 10^4 saturate the softmax, so the soft loss's gradient underflows; the margin steps in."""
    model, x, w = _linear(0.5)
    sharp = LinearClassifier(w * 1e4, model.b * 1e4)
    noise = IsotropicGaussian(0.05)  # p_A = Phi(10): every draw agrees
    cert = _certify(sharp, x, noise, seed=0)
    result = audit(sharp, x, noise, cert, SETTINGS, torch.Generator().manual_seed(1))
    assert result.verdict == CONSISTENT
    assert 0.5 <= result.empirical_bound * (1 + 1e-6) <= 0.5 * 1.03


class _ModeSpy(torch.nn.Module):
    """Records the mode of every forward, so the test sees what the audit ran the model in."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.modes: set[bool] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.add(self.training)
        return self.inner(x)


def test_the_audit_runs_a_train_mode_model_in_eval_mode_and_gives_its_mode_back():
    inner, x, _ = _linear(0.5)
    noise = IsotropicGaussian(0.25)
    cert = _certify(inner, x, noise, seed=0)
    model = _ModeSpy(inner).train()
    settings = AuditSettings(n=2000, alpha=0.001, draws=4, steps=2, growth_steps=1, bisection_steps=0, batch_size=2000)
    audit(model, x, noise, cert, settings, torch.Generator().manual_seed(1))
    assert model.modes == {False} and model.training and model.inner.training
