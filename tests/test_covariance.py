"""Low-rank algebra against dense numpy on small d (docs/MATH.md sections 3 and 6)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsmooth_core import AnisotropicGaussian, IsotropicGaussian, LowRankCovariance
from tests.oracles import anisotropic_perturbations, dense_normalized

SHAPE = (3, 4, 4)
D = 48


def _dense_ppca(perturbations: torch.Tensor, k: int) -> tuple[np.ndarray, float]:
    """S_k from numpy's covariance and eigh, following docs/MATH.md section 3 literally."""
    flat = perturbations.reshape(perturbations.shape[0], -1).numpy()
    s = np.cov(flat, rowvar=False)
    evals, evecs = np.linalg.eigh(s)
    evals, evecs = evals[::-1], evecs[:, ::-1]
    rho2 = (np.trace(s) - evals[:k].sum()) / (D - k)
    u = evecs[:, :k]
    return u @ np.diag(evals[:k] - rho2) @ u.T + rho2 * np.eye(D), rho2


@pytest.mark.parametrize("n_samples", [30, 300])  # N < d (Gram route) and N > d
def test_fit_matches_dense_ppca(n_samples):
    data = anisotropic_perturbations(n_samples, SHAPE, seed=3)
    cov = LowRankCovariance.fit(data, k=5)
    s_k, rho2 = _dense_ppca(data, 5)
    assert cov.residual_variance == pytest.approx(rho2, rel=1e-9)
    assert cov.logdet() == pytest.approx(np.linalg.slogdet(s_k)[1], rel=1e-9)
    st = s_k / np.exp(np.linalg.slogdet(s_k)[1] / D)
    np.testing.assert_allclose(dense_normalized(cov), st, atol=1e-9)
    deltas = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    flat = deltas.reshape(6, -1).numpy()
    expected = np.sqrt(np.einsum("bi,ij,bj->b", flat, np.linalg.inv(st), flat))
    np.testing.assert_allclose(cov.mahalanobis(deltas).numpy(), expected, rtol=1e-9)
    assert float(cov.mahalanobis(deltas[0])) == pytest.approx(expected[0], rel=1e-9)
    mu = np.linalg.eigvalsh(st)
    assert cov.mu_min == pytest.approx(mu.min(), rel=1e-9)
    assert cov.mu_max == pytest.approx(mu.max(), rel=1e-9)
    assert np.prod(mu) == pytest.approx(1.0, rel=1e-9)


def test_l1_radius_factor_is_exact():
    cov = LowRankCovariance.fit(anisotropic_perturbations(100, SHAPE, seed=4), k=4)
    st_inv = np.linalg.inv(dense_normalized(cov))
    factor = cov.l1_radius_factor()
    assert factor == pytest.approx(1 / math.sqrt(st_inv.diagonal().max()), rel=1e-9)
    # The worst l1 vertex lies exactly on the ellipsoid of radius 1; every other vertex inside it.
    vertices = factor * torch.eye(D, dtype=torch.float64).reshape(D, *SHAPE)
    dists = cov.mahalanobis(vertices)
    assert float(dists.max()) == pytest.approx(1.0, rel=1e-9)
    assert bool((dists <= 1 + 1e-9).all())


def test_sample_covariance_matches_sigma_squared_st():
    cov = LowRankCovariance.fit(anisotropic_perturbations(200, (1, 2, 3), seed=5), k=2)
    noise = AnisotropicGaussian(0.4, cov)
    draws = noise.sample(200_000, (1, 2, 3), torch.Generator().manual_seed(1), dtype=torch.float64)
    empirical = np.cov(draws.reshape(200_000, -1).numpy(), rowvar=False)
    np.testing.assert_allclose(empirical, 0.16 * dense_normalized(cov), atol=0.01)


def _isotropic(c2: float, k: int) -> LowRankCovariance:
    basis = torch.linalg.qr(torch.randn(D, max(k, 1), dtype=torch.float64))[0][:, :k]
    return LowRankCovariance(
        shape=SHAPE,
        eigenvectors=basis,
        base_eigenvalues=torch.full((k,), c2, dtype=torch.float64),
        base_residual=c2,
        trace=c2 * D,
    )


@pytest.mark.parametrize("k", [0, 3])
def test_scaled_identity_is_randsmooth(k):
    cov = _isotropic(0.7**2, k)
    dsmooth, randsmooth = AnisotropicGaussian(0.25, cov), IsotropicGaussian(0.25)
    assert cov.geometric_mean == pytest.approx(0.49, rel=1e-12)
    assert cov.mu_min == pytest.approx(1.0, rel=1e-12) and cov.mu_max == pytest.approx(1.0, rel=1e-12)
    delta = torch.randn(5, *SHAPE, dtype=torch.float64)
    torch.testing.assert_close(dsmooth.distance(delta), randsmooth.distance(delta), rtol=1e-12, atol=0)
    assert dsmooth.radius(0.9) == randsmooth.radius(0.9)
    a = dsmooth.sample(7, SHAPE, torch.Generator().manual_seed(3), dtype=torch.float64)
    b = randsmooth.sample(7, SHAPE, torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)


def test_full_shrinkage_is_randsmooth():
    cov = LowRankCovariance.fit(anisotropic_perturbations(100, SHAPE, seed=6), k=5, shrinkage=1.0)
    np.testing.assert_allclose(dense_normalized(cov), np.eye(D), atol=1e-12)
    delta = torch.randn(4, *SHAPE, dtype=torch.float64)
    torch.testing.assert_close(cov.mahalanobis(delta), delta.flatten(1).norm(dim=1), rtol=1e-12, atol=0)
    assert cov.l1_radius_factor() == pytest.approx(1.0, rel=1e-12)


def test_shrinkage_interpolates_spectrum():
    cov = LowRankCovariance.fit(anisotropic_perturbations(100, SHAPE, seed=6), k=5)
    t = cov.trace / D
    half = cov.with_shrinkage(0.5)
    torch.testing.assert_close(half.eigenvalues, 0.5 * cov.eigenvalues + 0.5 * t)
    assert half.residual_variance == pytest.approx(0.5 * cov.residual_variance + 0.5 * t)
    assert cov.mu_max > half.mu_max > 1 and cov.mu_min < half.mu_min < 1


def test_with_rank_equals_refit():
    data = anisotropic_perturbations(80, SHAPE, seed=8)
    small, big = LowRankCovariance.fit(data, k=3), LowRankCovariance.fit(data, k=7).with_rank(3)
    assert big.residual_variance == pytest.approx(small.residual_variance, rel=1e-9)
    np.testing.assert_allclose(dense_normalized(big), dense_normalized(small), atol=1e-9)


def test_k_is_clamped_to_rank_with_warning():
    data = anisotropic_perturbations(6, SHAPE, seed=9)  # rank at most 5
    with (
        pytest.warns(UserWarning, match="exceeds what the data allows"),
        pytest.warns(UserWarning, match="floored"),
    ):
        cov = LowRankCovariance.fit(data, k=20)
    assert cov.k == 5 and cov.rank == 5


def test_zero_residual_is_floored_with_warning():
    data = torch.zeros(300, 1, 1, 4, dtype=torch.float64)
    data[..., :2] = torch.randn(300, 1, 1, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with pytest.warns(UserWarning, match="floored"):
        cov = LowRankCovariance.fit(data, k=2)  # rank 2 in d = 4: nothing left for the residual
    assert cov.residual_floored
    assert cov.residual_variance == pytest.approx(1e-6 * float(cov.eigenvalues[0]))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (torch.full((5, *SHAPE), float("nan")), "NaN or infinite"),
        (torch.ones(1, *SHAPE), "at least 2"),
        (torch.ones(4, *SHAPE), "identical"),
    ],
)
def test_bad_input_is_rejected(data, message):
    with pytest.raises(ValueError, match=message):
        LowRankCovariance.fit(data, k=2)


def test_fit_leaves_input_untouched():
    data = anisotropic_perturbations(40, SHAPE, seed=10)
    before = data.clone()
    LowRankCovariance.fit(data, k=3)
    torch.testing.assert_close(data, before, rtol=0, atol=0)


def test_save_load_round_trip(tmp_path):
    cov = LowRankCovariance.fit(anisotropic_perturbations(50, SHAPE, seed=11), k=4, metadata={"why": "test"})
    cov.save(tmp_path / "cov.pt")
    back = LowRankCovariance.load(tmp_path / "cov.pt")
    assert back.content_hash() == cov.content_hash()
    assert back.summary() == cov.summary() and back.metadata == {"why": "test"}
    torch.testing.assert_close(back.eigenvectors, cov.eigenvectors, rtol=0, atol=0)


def test_load_rejects_corrupt_and_foreign_files(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="not a readable covariance file"):
        LowRankCovariance.load(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a DSmooth covariance file"):
        LowRankCovariance.load(tmp_path / "other.pt")
    cov = LowRankCovariance.fit(anisotropic_perturbations(50, SHAPE, seed=11), k=4)
    cov.save(tmp_path / "cov.pt")
    blob = torch.load(tmp_path / "cov.pt", weights_only=True)
    blob["base_eigenvalues"] = blob["base_eigenvalues"] * 2
    torch.save(blob, tmp_path / "tampered.pt")
    with pytest.raises(ValueError, match="content hash"):
        LowRankCovariance.load(tmp_path / "tampered.pt")
