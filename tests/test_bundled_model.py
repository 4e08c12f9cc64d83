"""The committed default model matches its model card (needs the real CIFAR-10 files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsmooth_core import bundled
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.data import DataUnavailableError, balanced_subset, load_cifar10
from dsmooth_core.models import BUNDLED_CARD, DEFAULT_MODEL, load_model
from dsmooth_core.training import accuracy, noise_label, parse_noise

ROOT = Path(__file__).resolve().parents[1]


def test_card_describes_the_committed_weights():
    card = json.loads(BUNDLED_CARD.read_text())
    model = load_model(DEFAULT_MODEL)
    assert card["weights_sha256"] == model.info.weights_hash
    assert card["architecture"] == "resnet20" and "JPEG" in card["data_note"]
    assert set(card["noisy_accuracy"]) >= {
        f"{m} sigma={s:g}" for m in ("RandSmooth", "LSmooth", "DSmooth") for s in (0.12, 0.25, 0.5)
    }


def test_accuracy_matches_card_on_real_cifar10():
    try:
        test = load_cifar10("test", download=False)
    except DataUnavailableError:
        pytest.skip("real CIFAR-10 not found under DSMOOTH_DATA_DIR (.ci/run points it at ../shared/data)")
    if len(test.labels) != 10_000:
        pytest.skip("DSMOOTH_DATA_DIR holds a CIFAR-10 stand-in, not the real test set")
    card = json.loads(BUNDLED_CARD.read_text())
    rows = balanced_subset(test.labels, 1000, seed=0)
    model = load_model(DEFAULT_MODEL)
    images, labels = test.tensor(rows), torch.from_numpy(test.labels[rows])
    clean = accuracy(model, images, labels, None, torch.Generator())
    assert clean == pytest.approx(card["clean_accuracy"], abs=0.02)
    # The card's noisy accuracies come from one noise draw per image, so each carries a sampling error
    # of about sqrt(0.2 / 1000) = 1.4 points; the mean of 4 draws here adds 0.7. A 4-point tolerance is
    # about 2.5 standard deviations of the difference (2 points, as for the clean accuracy, is barely 1).
    covariance = LowRankCovariance.load(ROOT / card["profile"]["path"])
    assert covariance.content_hash() == card["profile"]["content_hash"]
    for spec in ("randsmooth:0.25", "lsmooth:0.25", "dsmooth:0.25"):
        noise = parse_noise(spec, covariance)
        draws = [accuracy(model, images, labels, noise, torch.Generator().manual_seed(s)) for s in range(4)]
        assert sum(draws) / 4 == pytest.approx(card["noisy_accuracy"][noise_label(noise)], abs=0.04), (spec, draws)


def test_bundled_profiles_fit_the_bundled_weights_on_training_images():
    from dsmooth_core.profiles import ThreatProfile
    from dsmooth_core.tuning import axis_ratio

    model = load_model(DEFAULT_MODEL)
    tuned, paper = ThreatProfile.load(bundled.PROFILE), ThreatProfile.load(bundled.PAPER_PROFILE)
    for profile in (tuned, paper):
        profile.check_matches(model)
        assert profile.split == "train"
    cov = paper.covariance
    assert (cov.normalization, cov.k, cov.shrinkage, paper.tuning) == ("det", 100, 0.0, None)
    choice = tuned.tuning["choice"]
    cov = tuned.covariance
    assert (cov.normalization, cov.k, cov.shrinkage) == (choice["normalization"], choice["k"], choice["shrinkage"])
    assert axis_ratio(cov) >= 2.0  # genuinely anisotropic, not RandSmooth by the back door
    assert not set(tuned.tuning["tuning_indices"]) & set(tuned.tuning["fitting_indices"])
