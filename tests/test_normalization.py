"""Trace normalization of St (trace(St) = d) against dense numpy, beside the paper's det normalization.

The radius formula does not depend on the normalization (it is always sigma * Phi^-1(p_lower) in the
metric of the St the noise was drawn from); what changes is St itself, so every quantity derived from
St is checked against a dense St built independently.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsmooth_core import AnisotropicGaussian, IsotropicGaussian, LowRankCovariance
from tests.oracles import anisotropic_perturbations, dense_normalized

SHAPE = (3, 4, 4)
D = math.prod(SHAPE)


@pytest.fixture(scope="module")
def fit() -> LowRankCovariance:
    return LowRankCovariance.fit(anisotropic_perturbations(120, SHAPE, seed=11), k=5, normalization="trace")


def _dense_s_k(cov: LowRankCovariance) -> np.ndarray:
    u = cov.eigenvectors.numpy()
    return u @ np.diag(cov.eigenvalues.numpy() - cov.residual_variance) @ u.T + cov.residual_variance * np.eye(D)


def test_trace_normalized_st_has_trace_d_and_matches_dense(fit):
    s_k = _dense_s_k(fit)
    assert fit.normalizer == pytest.approx(np.trace(s_k) / D, rel=1e-12)  # the library's scale, against numpy
    st = s_k / fit.normalizer
    # trace(St) = d from the library's own spectrum (eigenvalues, residual, normalizer), not from st
    spectrum_sum = float(fit.eigenvalues.sum()) + (D - fit.k) * fit.residual_variance
    assert spectrum_sum / fit.normalizer == pytest.approx(D, rel=1e-12)
    deltas = torch.randn(5, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flat = deltas.reshape(5, -1).numpy()
    expected = np.sqrt(np.einsum("bi,ij,bj->b", flat, np.linalg.inv(st), flat))
    np.testing.assert_allclose(fit.mahalanobis(deltas).numpy(), expected, rtol=1e-9)
    mu = np.linalg.eigvalsh(st)
    assert fit.mu_min == pytest.approx(mu.min(), rel=1e-9)
    assert fit.mu_max == pytest.approx(mu.max(), rel=1e-9)
    assert fit.l1_radius_factor() == pytest.approx(1 / math.sqrt(np.linalg.inv(st).diagonal().max()), rel=1e-9)


def test_the_two_normalizations_differ_by_one_scale(fit):
    det = fit.with_normalization("det")
    scale = det.normalizer / fit.normalizer  # St_trace = St_det * scale
    # AM-GM: the arithmetic mean of the eigenvalues is at least their geometric mean.
    assert fit.normalizer >= det.normalizer
    delta = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(fit.mahalanobis(delta), det.mahalanobis(delta) / math.sqrt(scale), rtol=1e-9, atol=0)
    assert fit.mu_min == pytest.approx(det.mu_min * scale, rel=1e-9)
    assert det.normalizer == pytest.approx(math.exp(np.linalg.slogdet(_dense_s_k(det))[1] / D), rel=1e-9)
    # log det St of each normalization, the library's against numpy's dense determinant
    for cov in (det, fit):
        dense_logdet = np.linalg.slogdet(_dense_s_k(cov) / cov.normalizer)[1]
        assert cov.logdet_normalized() == pytest.approx(dense_logdet, abs=1e-6)
    assert det.logdet_normalized() == pytest.approx(0.0, abs=1e-9) and fit.logdet_normalized() < 0


def test_sample_covariance_matches_sigma_squared_trace_st():
    cov = LowRankCovariance.fit(anisotropic_perturbations(200, (1, 2, 3), seed=5), k=2, normalization="trace")
    draws = AnisotropicGaussian(0.4, cov).sample(
        200_000, (1, 2, 3), torch.Generator().manual_seed(1), dtype=torch.float64
    )
    empirical = np.cov(draws.reshape(200_000, -1).numpy(), rowvar=False)
    np.testing.assert_allclose(empirical, 0.16 * dense_normalized(cov), atol=0.01)
    # equal noise energy: the mean squared norm of a draw is sigma^2 d, as for N(0, sigma^2 I)
    assert float(draws.pow(2).sum(dim=(1, 2, 3)).mean()) == pytest.approx(0.16 * 6, rel=0.01)


@pytest.mark.parametrize("normalization", ["det", "trace"])
def test_scaled_identity_is_randsmooth_under_either_normalization(normalization):
    basis = torch.linalg.qr(torch.randn(D, 3, dtype=torch.float64))[0]
    cov = LowRankCovariance(
        shape=SHAPE,
        eigenvectors=basis,
        base_eigenvalues=torch.full((3,), 0.3, dtype=torch.float64),
        base_residual=0.3,
        trace=0.3 * D,
        normalization=normalization,
    )
    delta = torch.randn(4, *SHAPE, dtype=torch.float64)
    torch.testing.assert_close(
        AnisotropicGaussian(0.25, cov).distance(delta), IsotropicGaussian(0.25).distance(delta), rtol=1e-12, atol=0
    )


def test_normalization_survives_save_and_load_and_is_part_of_the_identity(fit, tmp_path):
    fit.save(tmp_path / "trace.pt")
    loaded = LowRankCovariance.load(tmp_path / "trace.pt")
    assert loaded.normalization == "trace"
    assert loaded.content_hash() == fit.content_hash() != fit.with_normalization("det").content_hash()
    torch.testing.assert_close(loaded.mahalanobis(torch.ones(SHAPE)), fit.mahalanobis(torch.ones(SHAPE)))


def test_unknown_normalization_is_refused(fit):
    with pytest.raises(ValueError, match="normalization must be one of det, trace"):
        fit.with_normalization("volume")


def test_equal_volume_radius_follows_the_determinant(fit):
    # vol(ellipsoid of radius R in St) = vol(l2 ball of R) * sqrt(det St): the l2 ball of equal volume
    # has radius R det(St)^(1/(2d)), from a dense log-determinant.
    _, logdet = np.linalg.slogdet(dense_normalized(fit))
    expected = 0.7 * math.exp(logdet / (2 * D))
    assert AnisotropicGaussian(0.25, fit).equal_volume_l2_radius(0.7, D) == pytest.approx(expected, rel=1e-9)
    assert expected < 0.7
    det = AnisotropicGaussian(0.25, fit.with_normalization("det"))
    assert det.equal_volume_l2_radius(0.7, D) == pytest.approx(0.7, rel=1e-9)
