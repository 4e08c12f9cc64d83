"""Threat profiles: what they record, persistence, and the checks that keep a certificate honest."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

import dsmooth_core.profiles as profiles
from dsmooth_core.attacks import AttackConfig, square_then_fgsm
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.data import ImageSet
from dsmooth_core.models import ModelInfo, wrap
from dsmooth_core.profiles import (
    Calibration,
    ProfileMismatchError,
    ThreatProfile,
    Tuning,
    build_profile,
    calibrate,
    check_usable,
)
from dsmooth_core.tuning import TuningGrid
from tests.toy import CLASSES, SHAPE, prototype_mlp

STRONG = AttackConfig(eps_inf=0.5, n_queries=30, p_init=0.1, fgsm="l2", eps_fgsm=0.5, project_linf=True)
# Too small to fool the fixture model: every image is changed, none is misclassified.
FEEBLE = AttackConfig(eps_inf=1e-3, n_queries=5, p_init=0.1, fgsm=None)
INDICES = tuple(range(100, 140))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are tiny: threads gain nothing, and on a busy CPU their synchronisation made the
    fixture's training take 16 s instead of 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _info(input_shape: tuple[int, int, int] = SHAPE) -> ModelInfo:
    return ModelInfo("tiny-mlp", "synthetic", input_shape, tuple(map(str, range(CLASSES))), "trained in a fixture")


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The toy MLP wrapped with a ModelInfo, and held-out images it classifies correctly."""
    net, x, y = prototype_mlp(len(INDICES))
    return wrap(net, _info()), x, y


def _calibration(config: AttackConfig = STRONG, **kwargs) -> Calibration:
    options = {"size": len(INDICES), "attack": config, "k": 4, "seed": 3, "dataset": "synthetic", "split": "train"}
    return Calibration(**{**options, **kwargs})


def _build(trained, config: AttackConfig = STRONG, indices=INDICES, **kwargs) -> ThreatProfile:
    model, x, y = trained
    return build_profile(model, x, y, _calibration(config, **kwargs), indices=indices)


@pytest.fixture(scope="module")
def profile(trained) -> ThreatProfile:
    return _build(trained)


def test_profile_records_what_produced_it(trained, profile):
    model, x, y = trained
    attack = square_then_fgsm(model, x, y, STRONG, generator=torch.Generator().manual_seed(3))
    fooled = int(attack.success.sum())
    assert 2 <= fooled < len(x), "the threat should fool some, not all, fixture images"
    assert profile.model_name == "tiny-mlp" and profile.model_hash == model.info.weights_hash
    assert (profile.dataset, profile.split, profile.indices) == ("synthetic", "train", INDICES)
    assert profile.attack == STRONG.to_dict() and profile.keep == "successful" and profile.seed == 3
    assert (profile.n_attacked, profile.n_kept) == (len(x), fooled)
    expected = LowRankCovariance.fit(attack.perturbation[attack.success], 4)
    assert profile.covariance.shape == SHAPE and profile.covariance.n_samples == fooled
    assert profile.covariance.content_hash() == expected.content_hash()


def test_save_load_round_trip(profile, tmp_path):
    profile.save(tmp_path / "profile.pt")
    back = ThreatProfile.load(tmp_path / "profile.pt")
    for field in dataclasses.fields(ThreatProfile):
        if field.name != "covariance":
            assert getattr(back, field.name) == getattr(profile, field.name), field.name
    assert back.covariance.content_hash() == profile.covariance.content_hash()
    assert back.summary() == profile.summary() and back.metadata() == profile.metadata()
    torch.testing.assert_close(back.covariance.mean, profile.covariance.mean, rtol=0, atol=0)


def test_load_refuses_a_bare_covariance(profile, tmp_path):
    profile.covariance.save(tmp_path / "covariance.pt")
    with pytest.raises(ValueError, match="no threat-profile metadata"):
        ThreatProfile.load(tmp_path / "covariance.pt")


def test_check_matches_refuses_other_weights(trained, profile):
    model = trained[0]
    profile.check_matches(model)
    other = copy.deepcopy(model.net)
    with torch.no_grad():
        other[1].bias.add_(1e-3)
    with pytest.raises(ProfileMismatchError, match=r"built on model 'tiny-mlp'.*build a profile for this model"):
        profile.check_matches(wrap(other, _info()))


def test_check_matches_refuses_another_input_shape(trained, profile):
    same_weights = wrap(trained[0].net, _info(input_shape=(3, 16, 16)))
    assert same_weights.info.weights_hash == profile.model_hash
    with pytest.raises(ProfileMismatchError, match=r"inputs of shape \(3, 8, 8\), the model takes \(3, 16, 16\)"):
        profile.check_matches(same_weights)


def test_check_usable_is_the_one_decision(trained, profile):
    model = trained[0]
    check_usable(profile, model, SHAPE, "synthetic", "test", list(INDICES))  # another split: usable
    assert profile.model_identity == model.info.identity
    renormalized = wrap(model.net, dataclasses.replace(_info(), mean=(0.5,) * SHAPE[0]))
    assert renormalized.info.weights_hash == profile.model_hash  # the same weights, another model
    with pytest.raises(ProfileMismatchError, match=r"identity .*normalization.*build a profile for this model"):
        check_usable(profile, renormalized, SHAPE)
    with pytest.raises(ProfileMismatchError, match=r"the profile is for inputs \(3, 8, 8\), the images are"):
        check_usable(profile, model, (3, 9, 9))
    with pytest.raises(ProfileMismatchError, match=r"1 image\(s\) to certify were used to calibrate"):
        check_usable(profile, model, SHAPE, "synthetic", "train", [5, INDICES[0]])
    legacy = dataclasses.replace(profile, model_identity="")  # written before identities: weights decide
    check_usable(legacy, renormalized, SHAPE)
    assert "model_identity" not in legacy.metadata()


def test_check_disjoint(profile):
    with pytest.raises(ProfileMismatchError, match=r"2 image\(s\) to certify were used to calibrate.*101, 139"):
        profile.check_disjoint("synthetic", "train", [5, 101, 139, 500])
    profile.check_disjoint("synthetic", "train", [5, 99, 140])  # same split, other images
    profile.check_disjoint("synthetic", "test", list(INDICES))  # same indices of another split
    profile.check_disjoint("cifar10", "train", list(INDICES))  # or of another data set


def test_calibrate_picks_the_subset_and_attacks_once(trained, tmp_path, monkeypatch):
    model, x, y = trained
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    data = ImageSet(pixels, y.numpy().astype("int64"), tuple(map(str, range(CLASSES))))
    size = len(set(y.tolist()))  # one image of each class present
    calibration = _calibration(size=size, subset_seed=5, keep="nonzero")
    first = calibrate(model, data, calibration, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [
        calibration.cache_path(tmp_path, model.info.identity, data.labels).name
    ]
    assert list(first.indices) == calibration.indices(data.labels) and len(first.indices) == size
    assert sorted(data.labels[list(first.indices)].tolist()) == sorted(set(y.tolist()))  # class-balanced
    assert first.seed == 3 and first.keep == "nonzero" and first.split == "train"

    def no_attack(*args, **kwargs):
        raise AssertionError("the cached profile should have been loaded")

    monkeypatch.setattr(profiles, "square_then_fgsm", no_attack)
    second = calibrate(model, data, calibration, cache_dir=tmp_path)
    assert second.metadata() == first.metadata()
    assert second.covariance.content_hash() == first.covariance.content_hash()
    for other in (dataclasses.replace(calibration, k=3), dataclasses.replace(calibration, subset_seed=6)):
        with pytest.raises(AssertionError, match="cached profile"):  # another k or subset is another profile
            calibrate(model, data, other, cache_dir=tmp_path)
    with pytest.raises(AssertionError, match="cached profile"):  # without a cache, always built
        calibrate(model, data, calibration)


def test_calibration_identity_is_the_key_of_the_earlier_cache_files():
    """Profiles cached before ``Calibration`` existed keep their file names (same hashed fields)."""
    calibration = Calibration(size=2, attack=STRONG, k=4, keep="successful", seed=3, dataset="synthetic")
    # profile_identity("abc", "synthetic", "train", [1, 2], STRONG, 4, "successful", 3) before the refactor
    assert calibration.identity("abc", [1, 2]) == "dfbde84614c790572158"
    assert calibration.identity("abc", [1, 2]) != calibration.identity("abc", [1, 3])
    assert calibration.identity("abc", [1, 2]) != calibration.identity("abd", [1, 2])
    # the subset seed and size act through the indices they pick
    same_subset = dataclasses.replace(calibration, subset_seed=9, size=5)
    assert same_subset.identity("abc", [1, 2]) == calibration.identity("abc", [1, 2])


def test_keep_successful_with_nothing_fooled_is_a_clear_error(trained):
    with pytest.raises(ValueError, match=r"only 0 of 40 attacks gave a perturbation to keep \(successful\)"):
        _build(trained, FEEBLE)


def test_keep_nonzero_keeps_every_changed_image(trained):
    model, x, y = trained
    attack = square_then_fgsm(model, x, y, FEEBLE, generator=torch.Generator().manual_seed(3))
    changed = attack.perturbation.flatten(1).abs().amax(1) > 0
    assert not attack.success.any() and changed.all()
    profile = _build(trained, FEEBLE, keep="nonzero")
    assert profile.n_kept == len(x) and profile.covariance.n_samples == len(x)


def test_zero_perturbations_are_never_kept(trained):
    """An image misclassified before the attack counts as a success, but without FGSM it is unchanged."""
    model, x, y = trained
    y = y.clone()
    y[:3] = (y[:3] + 1) % CLASSES  # three images start misclassified
    config = dataclasses.replace(STRONG, fgsm=None)
    attack = square_then_fgsm(model, x, y, config, generator=torch.Generator().manual_seed(3))
    unchanged = attack.perturbation.flatten(1).abs().amax(1) == 0
    assert unchanged[:3].all() and attack.success[:3].all()
    profile = build_profile(model, x, y, _calibration(config), indices=INDICES)
    assert profile.n_kept == int((attack.success & ~unchanged).sum())


def test_bad_arguments_are_rejected(trained):
    with pytest.raises(ValueError, match="keep must be"):
        _build(trained, keep="everything")
    with pytest.raises(ValueError, match="3 indices given for 40"):
        _build(trained, indices=(1, 2, 3))


def test_tuned_calibration_fits_and_tunes_on_disjoint_calibration_images_only(trained, tmp_path, monkeypatch):
    model, x, y = trained
    pixels = (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    data = ImageSet(pixels, y.numpy().astype("int64"), tuple(map(str, range(CLASSES))))
    grid = TuningGrid(normalizations=("det", "trace"), ranks=(4, 2), shrinkages=(0.0, 0.5), min_axis_ratio=1.0)
    tuning = Tuning(sigma=0.25, share=0.4, grid=grid, n0=10, n=30, alpha=0.01, seed=1)
    calibration = _calibration(size=len(set(y.tolist())), keep="nonzero", tuning=tuning)
    seen = []
    real_tune = profiles.tune_covariance

    def spy(model, fitted, images, labels, **kwargs):
        seen.append(images.clone())
        return real_tune(model, fitted, images, labels, **kwargs)

    monkeypatch.setattr(profiles, "tune_covariance", spy)
    profile = calibrate(model, data, calibration, cache_dir=tmp_path)
    record = profile.tuning
    fitting, held_out = record["fitting_indices"], record["tuning_indices"]
    chosen = calibration.indices(data.labels)
    assert sorted(fitting + held_out) == sorted(chosen) == list(profile.indices) and not set(fitting) & set(held_out)
    assert profile.n_attacked == len(fitting) and len(held_out) == round(0.4 * len(chosen))
    torch.testing.assert_close(seen[0], data.tensor(held_out))  # tuning saw its own images and nothing else
    choice = record["choice"]
    cov = profile.covariance
    assert (cov.normalization, cov.k, cov.shrinkage) == (choice["normalization"], choice["k"], choice["shrinkage"])
    assert len(record["table"]) == 8 and record["sigma"] == 0.25
    for part in (fitting, held_out):  # an evaluation image from either part is refused
        with pytest.raises(ProfileMismatchError, match="used to calibrate"):
            profile.check_disjoint("synthetic", "train", [part[0]])
    back = ThreatProfile.load(next(tmp_path.iterdir()))
    assert back.tuning == record and back.covariance.content_hash() == cov.content_hash()
    untuned = dataclasses.replace(calibration, tuning=None)
    assert untuned.identity("abc", [1, 2]) != calibration.identity("abc", [1, 2])
