"""Clopper-Pearson, argument validation, cancel, determinism and OOM recovery of predict/certify."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from scipy.stats import beta, binom, norm
from torch import nn

from dsmooth_core import (
    ABSTAIN,
    AnisotropicGaussian,
    Cancelled,
    IsotropicGaussian,
    Laplace,
    LowRankCovariance,
    at_level,
    certify,
    predict,
    radius_ceiling,
)
from dsmooth_core.contract import ModelContractError, model_contract
from dsmooth_core.stats import clopper_pearson_lower
from tests.oracles import LinearClassifier, anisotropic_perturbations

SHAPE = (3, 4, 4)


@pytest.fixture
def model() -> nn.Module:
    w = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return LinearClassifier(w, b=float(w.sum()) * 0.5 - 1.0)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.full(SHAPE, 0.5)


@pytest.mark.parametrize("n", [1, 10, 1000, 100_000])
def test_clopper_pearson_unanimous(n):
    assert clopper_pearson_lower(n, n, 0.001) == pytest.approx(0.001 ** (1 / n), rel=1e-10)


@pytest.mark.parametrize(("successes", "trials"), [(1, 10), (57, 100), (990, 1000), (5000, 10_000)])
def test_clopper_pearson_matches_beta_and_binomial_tail(successes, trials):
    bound = clopper_pearson_lower(successes, trials, 0.01)
    assert bound == beta.ppf(0.01, successes, trials - successes + 1)
    # Defining property: at p = bound, seeing >= successes has probability exactly alpha.
    assert binom.sf(successes - 1, trials, bound) == pytest.approx(0.01, rel=1e-6)


def test_clopper_pearson_zero_successes_and_bad_counts():
    assert clopper_pearson_lower(0, 50, 0.05) == 0.0
    with pytest.raises(ValueError):
        clopper_pearson_lower(11, 10, 0.05)


def test_radius_ceiling_matches_published_figures():
    assert radius_ceiling(IsotropicGaussian(1.0), 100_000, 0.001) == pytest.approx(3.81, abs=0.005)
    assert radius_ceiling(IsotropicGaussian(1.0), 1000, 0.001) == pytest.approx(2.46, abs=0.005)
    assert radius_ceiling(IsotropicGaussian(1.0), 5, 0.001) == 0.0
    lam = 0.3
    assert radius_ceiling(Laplace(lam), 1000, 0.001) == pytest.approx(-lam * math.log(2 * (1 - 0.001**0.001)))


def test_certificate_fields(model, x):
    noise = IsotropicGaussian(0.25)
    cert = certify(
        model, x, noise, n0=50, n=500, alpha=0.001, batch_size=128, generator=torch.Generator().manual_seed(1)
    )
    assert cert.prediction in (0, 1) and cert.metric == "l2"
    assert cert.method == "randsmooth" and cert.method_name == "RandSmooth"
    assert sum(cert.counts_selection) == 50 and sum(cert.counts_estimation) == 500
    top = cert.prediction
    assert cert.p_lower == pytest.approx(clopper_pearson_lower(cert.counts_estimation[top], 500, 0.001))
    assert cert.radius == pytest.approx(0.25 * norm.ppf(cert.p_lower))
    assert cert.radius <= cert.radius_ceiling and cert.seconds > 0


@pytest.mark.parametrize("noise", [IsotropicGaussian(0.3), Laplace(0.2)])
def test_at_level_equals_certifying_again_at_that_alpha(model, x, noise):
    base = certify(model, x, noise, 30, 300, 0.1, 64, torch.Generator().manual_seed(5))
    for alpha in (0.1, 0.01, 1e-5):
        direct = certify(model, x, noise, 30, 300, alpha, 64, torch.Generator().manual_seed(5))
        assert at_level(base, noise, alpha) == dataclasses.replace(direct, seconds=base.seconds)
    assert 0 < at_level(base, noise, 1e-5).radius < base.radius
    with pytest.raises(ValueError, match="alpha"):
        at_level(base, noise, 1.0)
    with pytest.raises(ValueError, match="re-levelled"):
        at_level(base, IsotropicGaussian(0.3) if isinstance(noise, Laplace) else Laplace(0.2), 0.01)


def test_abstains_on_a_coin_flip(x):
    w = torch.zeros(SHAPE, dtype=torch.float64)
    w[0, 0, 0] = 1.0
    coin = LinearClassifier(w, b=0.5)  # x sits on the boundary: each class wins half the draws
    cert = certify(
        coin,
        x,
        IsotropicGaussian(0.5),
        n0=50,
        n=400,
        alpha=0.001,
        batch_size=100,
        generator=torch.Generator().manual_seed(2),
    )
    assert cert.prediction == ABSTAIN and cert.radius == 0.0 and cert.abstained
    assert predict(coin, x, IsotropicGaussian(0.5), 400, 0.001, 100, torch.Generator().manual_seed(2)) == ABSTAIN


def test_predict_returns_the_clear_winner(model, x):
    assert predict(model, x, IsotropicGaussian(0.1), 200, 0.001, 64, torch.Generator().manual_seed(3)) == 1


@pytest.mark.parametrize("noise", [IsotropicGaussian(0.3), Laplace(0.2)])
def test_same_generator_same_certificate(model, x, noise):
    runs = [certify(model, x, noise, 30, 300, 0.01, 64, torch.Generator().manual_seed(9)) for _ in range(2)]
    assert runs[0].counts_estimation == runs[1].counts_estimation and runs[0].radius == runs[1].radius


def test_generator_is_the_only_randomness(model, x):
    torch.manual_seed(0)
    a = certify(model, x, IsotropicGaussian(0.8), 30, 300, 0.01, 64, torch.Generator().manual_seed(4))
    torch.manual_seed(123)
    b = certify(model, x, IsotropicGaussian(0.8), 30, 300, 0.01, 64, torch.Generator().manual_seed(4))
    assert a.counts_estimation == b.counts_estimation


def test_selection_and_estimation_use_fresh_noise(model, x):
    noise = IsotropicGaussian(0.8)
    cert = certify(model, x, noise, 300, 300, 0.01, 300, torch.Generator().manual_seed(5))
    assert cert.counts_selection != cert.counts_estimation


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": 1.0}, "alpha"),
        ({"n0": 0}, "n0"),
        ({"n": 0}, "n must"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_rejected(model, x, kwargs, message):
    args = {"n0": 10, "n": 10, "alpha": 0.01, "batch_size": 4} | kwargs
    with pytest.raises(ValueError, match=message):
        certify(model, x, IsotropicGaussian(0.5), generator=torch.Generator(), **args)


@pytest.mark.parametrize("sigma", [0.0, -1.0, float("nan"), float("inf")])
def test_sigma_must_be_positive(sigma):
    with pytest.raises(ValueError, match="sigma"):
        IsotropicGaussian(sigma)
    with pytest.raises(ValueError, match="sigma"):
        Laplace.from_sigma(sigma)


@pytest.mark.parametrize(
    "bad_x",
    [
        torch.full(SHAPE, 1.5),
        torch.full(SHAPE, -0.1),
        torch.full(SHAPE, float("nan")),
        torch.zeros(1, *SHAPE),
    ],
)
def test_input_must_be_one_image_in_unit_range(model, bad_x):
    with pytest.raises(ValueError, match="x must"):
        certify(model, bad_x, IsotropicGaussian(0.5), 10, 10, 0.01, 4, torch.Generator())


def test_dsmooth_rejects_other_shapes(model):
    cov = LowRankCovariance.fit(anisotropic_perturbations(20, SHAPE, seed=0), k=2)
    with pytest.raises(ValueError, match="shape"):
        certify(model, torch.zeros(3, 8, 8), AnisotropicGaussian(0.5, cov), 10, 10, 0.01, 4, torch.Generator())


def test_progress_reports_and_cancel(model, x):
    seen = []
    certify(
        model,
        x,
        IsotropicGaussian(0.5),
        20,
        100,
        0.01,
        16,
        torch.Generator().manual_seed(0),
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (120, 120) and all(t == 120 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    with pytest.raises(Cancelled):
        certify(
            model,
            x,
            IsotropicGaussian(0.5),
            20,
            100,
            0.01,
            16,
            torch.Generator().manual_seed(0),
            progress=lambda done, total: done >= 50,
        )


class _SmallMemoryModel(nn.Module):
    """Raises the accelerator's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.sizes.append(batch.shape[0])
        return self.inner(batch)


def test_out_of_memory_halves_the_batch(model, x):
    small = _SmallMemoryModel(model, limit=20)
    cert = certify(small, x, IsotropicGaussian(0.5), 10, 200, 0.01, 64, torch.Generator().manual_seed(0))
    assert sum(cert.counts_estimation) == 200 and max(small.sizes) <= 20


def test_other_errors_propagate(x):
    class Broken(nn.Module):
        def forward(self, batch):
            raise RuntimeError("shape mismatch in layer 3")

    with pytest.raises(ModelContractError, match="shape mismatch"):
        certify(Broken(), x, IsotropicGaussian(0.5), 10, 10, 0.01, 4, torch.Generator())


def test_dsmooth_certifies_end_to_end(model, x):
    cov = LowRankCovariance.fit(anisotropic_perturbations(60, SHAPE, seed=1), k=4)
    cert = certify(model, x, AnisotropicGaussian(0.25, cov), 30, 500, 0.001, 100, torch.Generator().manual_seed(0))
    assert cert.metric == "mahalanobis" and cert.method == "dsmooth" and cert.method_name == "DSmooth"


class _BatchSizes(nn.Module):
    """Records the size of every batch it sees, so a test can count the contract's probe batches."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.sizes: list[int] = []

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        self.sizes.append(batch.shape[0])
        return self.inner(batch)


def test_the_contract_is_checked_once_inside_an_enclosing_contract(model, x):
    noise = IsotropicGaussian(0.25)
    spy = _BatchSizes(model)
    for _ in range(2):  # on its own, each call probes (batches of 2 and 3) before its batches of 50
        certify(spy, x, noise, 50, 50, 0.01, 50, torch.Generator().manual_seed(0))
    assert spy.sizes == [2, 3, 50, 50] * 2
    spy.sizes.clear()
    with model_contract(spy, tuple(x.shape)):
        for _ in range(2):
            certify(spy, x, noise, 50, 50, 0.01, 50, torch.Generator().manual_seed(0))
    assert spy.sizes == [2, 3] + [50, 50] * 2  # probed once for the whole loop
    with pytest.raises(ModelContractError, match=r"probe batch of shape \(2, 3, 2, 4\)"), model_contract(spy, x.shape):
        certify(spy, x[:, :2], noise, 50, 50, 0.01, 50, torch.Generator().manual_seed(0))  # another shape: checked
