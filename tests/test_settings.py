"""Typed settings, result keys, model identity and the certificate's noise identity."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from dsmooth_core import IsotropicGaussian, LowRankCovariance, at_level, certify
from dsmooth_core.audit import AuditSettings
from dsmooth_core.errors import InputRefused
from dsmooth_core.models import ModelInfo
from dsmooth_core.noise import make_noise
from dsmooth_core.settings import CertifySettings, ProfileShape, result_key
from tests.oracles import LinearClassifier, anisotropic_perturbations

SHAPE = (3, 4, 4)


def test_certify_settings_normalise_the_method_to_its_key_and_name_every_field():
    settings = CertifySettings("RandSmooth", 0.25, n0=10, n=50, alpha=0.01, batch=7, seed=3)
    assert settings.method == "randsmooth"
    assert settings.identity() == {
        "method": "randsmooth",
        "sigma": 0.25,
        "n0": 10,
        "n": 50,
        "alpha": 0.01,
        "batch": 7,
        "seed": 3,
    }
    assert isinstance(settings.noise(), IsotropicGaussian) and settings.noise().sigma == 0.25


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sigma": 0.0}, "sigma must be a positive finite number"),
        ({"sigma": float("nan")}, "sigma must be a positive finite number"),
        ({"sigma": True}, "sigma must be a positive finite number"),
        ({"alpha": 1.0}, "alpha must lie strictly between 0 and 1"),
        ({"n": 0}, "n must be at least 1"),
        ({"n0": 2.5}, "n0 must be an integer"),
        ({"batch": True}, "batch must be an integer"),
        ({"seed": -1}, "seed must be an integer of 0 or more"),
        ({"method": "gauss"}, "unknown method 'gauss'"),
    ],
)
def test_certify_settings_refuse_bad_values_where_they_enter(fields, message):
    values = {"method": "randsmooth", "sigma": 0.25, **fields}
    with pytest.raises(ValueError, match=message):
        CertifySettings(**values)


def test_every_settings_field_changes_the_result_key():
    base = CertifySettings("dsmooth", 0.25)
    keys = {result_key(base)}
    changes = {"method": "lsmooth", "sigma": 0.5, "n0": 101, "n": 999, "alpha": 0.01, "batch": 401, "seed": 1}
    for name, value in changes.items():
        keys.add(result_key(dataclasses.replace(base, **{name: value})))
    assert len(keys) == 1 + len(changes)
    assert result_key(base) == result_key(CertifySettings("DSmooth", 0.25))  # the same settings, the same key


def test_result_key_names_tensors_by_content():
    a = torch.arange(6.0).reshape(2, 3)
    assert result_key(a) == result_key(a.clone())
    assert result_key(a) != result_key(a + 1) != result_key(a.reshape(3, 2))
    assert result_key("x", 1) != result_key("x", 1.5)
    with pytest.raises(TypeError, match="cannot name"):
        result_key(object())


def test_result_key_names_noises_and_plain_dataclasses_by_what_shapes_them(fitted):
    assert result_key(IsotropicGaussian(0.25)) == result_key(IsotropicGaussian(0.25))
    assert result_key(IsotropicGaussian(0.25)) != result_key(IsotropicGaussian(0.5))
    assert result_key(make_noise("dsmooth", 0.25, fitted)) != result_key(make_noise("lsmooth", 0.25))
    shaped = make_noise("dsmooth", 0.25, fitted.with_shrinkage(0.5))
    assert result_key(make_noise("dsmooth", 0.25, fitted)) != result_key(shaped)
    assert result_key(AuditSettings()) != result_key(AuditSettings(n=999))  # a dataclass without identity()


@pytest.fixture
def fitted() -> LowRankCovariance:
    return LowRankCovariance.fit(anisotropic_perturbations(40, SHAPE, seed=0), 6)


def test_profile_shape_is_validated_and_applied_in_one_place(fitted):
    shape = ProfileShape("trace", 3, 0.5)
    cov = shape.apply(fitted)
    assert (cov.normalization, cov.k, cov.shrinkage) == ("trace", 3, 0.5)
    assert ProfileShape.of(cov) == shape
    assert ProfileShape("det", 100, 0.0).apply(fitted).k == fitted.k  # clamped to the fit's rank
    for bad, message in [
        (("cube", 3, 0.0), "normalization must be one of"),
        (("det", 0, 0.0), "k must be at least 1"),
        (("det", 3, 1.5), r"shrinkage must lie in \[0, 1\]"),
    ]:
        with pytest.raises(InputRefused, match=message):
            ProfileShape(*bad)


BASE_INFO = ModelInfo(
    "net", "cifar10", (3, 32, 32), ("a", "b"), "bundled", weights_hash="w" * 64, architecture="resnet20"
)


@pytest.mark.parametrize(
    "change",
    [
        {"weights_hash": "v" * 64},
        {"code_hash": "c" * 64},
        {"mean": (0.5, 0.0, 0.0)},
        {"std": (1.0, 1.0, 0.5)},
        {"input_shape": (3, 28, 28)},
        {"class_names": ("a", "c")},
        {"architecture": "resnet56"},
        {"resize_size": 36},
    ],
)
def test_each_component_changes_the_model_identity(change):
    assert dataclasses.replace(BASE_INFO, **change).identity != BASE_INFO.identity


def test_display_name_and_source_do_not_change_the_model_identity():
    same = dataclasses.replace(BASE_INFO, name="renamed", source="file:x.pt", dataset="other")
    assert same.identity == BASE_INFO.identity
    assert result_key(same) == result_key(BASE_INFO)


@pytest.fixture
def model() -> torch.nn.Module:
    w = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return LinearClassifier(w, b=float(w.sum()) * 0.5 - 1.0)


def test_certificate_carries_the_method_key_and_its_noise_identity(model, fitted):
    noise = make_noise("dsmooth", 0.25, fitted)
    cert = certify(model, torch.full(SHAPE, 0.5), noise, 20, 200, 0.001, 100, torch.Generator().manual_seed(0))
    assert (cert.method, cert.method_name) == ("dsmooth", "DSmooth")
    assert cert.noise_identity == noise.identity() == ("dsmooth", 0.25, fitted.content_hash())


def test_at_level_refuses_a_noise_of_another_sigma_or_covariance(model, fitted):
    x = torch.full(SHAPE, 0.5)
    cert = certify(model, x, IsotropicGaussian(0.25), 20, 300, 0.001, 100, torch.Generator().manual_seed(0))
    assert at_level(cert, IsotropicGaussian(0.25), 0.01).radius > 0
    with pytest.raises(ValueError, match=r"sigma 0\.25, not 1"):
        at_level(cert, IsotropicGaussian(1.0), 0.01)
    dsmooth = certify(model, x, make_noise("dsmooth", 0.25, fitted), 20, 300, 0.001, 100, torch.Generator())
    with pytest.raises(ValueError, match="another covariance"):
        at_level(dsmooth, make_noise("dsmooth", 0.25, fitted.with_shrinkage(0.5)), 0.01)


def test_the_loaders_fill_the_architecture_and_code_hash(tmp_path):
    from dsmooth_core.models import DEFAULT_MODEL, load_model, load_user_model

    bundled = load_model(DEFAULT_MODEL, pretrained=False)
    assert (bundled.info.architecture, bundled.info.code_hash) == ("resnet20", "")
    path = tmp_path / "weights.pt"
    torch.save(bundled.net.state_dict(), path)
    user = load_user_model(path, architecture="resnet20")
    assert (user.info.architecture, user.info.code_hash) == ("resnet20", "")
    assert user.info.weights_hash == bundled.info.weights_hash
    assert user.info.identity != bundled.info.identity  # no normalization stated: another model
    stated = load_user_model(path, architecture="resnet20", mean=bundled.info.mean, std=bundled.info.std)
    assert stated.info.identity == bundled.info.identity  # the same network, weights and normalization
