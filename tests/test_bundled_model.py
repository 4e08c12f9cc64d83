"""The committed default model matches its model card (needs the real CIFAR-10 files)."""

from __future__ import annotations

import json

import pytest
import torch

from dsmooth_core.data import DataUnavailableError, balanced_subset, load_cifar10
from dsmooth_core.models import BUNDLED_CARD, DEFAULT_MODEL, load_model
from dsmooth_core.training import accuracy


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
    clean = accuracy(model, test.tensor(rows), torch.from_numpy(test.labels[rows]), None, torch.Generator())
    assert clean == pytest.approx(card["clean_accuracy"], abs=0.02)
