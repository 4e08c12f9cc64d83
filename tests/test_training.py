"""Noise-augmented training at toy scale: the mixture, resuming, and the train command's model card."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from dsmooth_core import Cancelled, IsotropicGaussian, Laplace
from dsmooth_core.cli import main
from dsmooth_core.training import NoiseMixture, TrainConfig, augment, parse_noise, train
from tests.fakedata import write_fake_cifar10


def test_parse_noise_specs():
    assert parse_noise("none") is None
    assert isinstance(parse_noise("randsmooth:0.25"), IsotropicGaussian)
    laplace = parse_noise("lsmooth:0.5")
    assert isinstance(laplace, Laplace) and laplace.sigma == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs a sigma"):
        parse_noise("randsmooth")
    with pytest.raises(ValueError, match="threat profile"):
        parse_noise("dsmooth:0.25")
    with pytest.raises(ValueError, match="unknown method"):
        parse_noise("uniform:0.3")


def test_mixture_applies_one_component_per_image():
    mixture = NoiseMixture([None, IsotropicGaussian(1.0)])
    batch = torch.zeros(2000, 1, 2, 2)
    noisy = mixture(batch, torch.Generator().manual_seed(0))
    untouched = (noisy.flatten(1) == 0).all(dim=1)
    assert 0.45 < float(untouched.float().mean()) < 0.55
    assert float(noisy[~untouched].std()) == pytest.approx(1.0, rel=0.05)
    assert bool((batch == 0).all())


def test_augment_keeps_shape_and_content_range():
    batch = torch.rand(16, 3, 32, 32)
    out = augment(batch, torch.Generator().manual_seed(0))
    assert out.shape == batch.shape and float(out.max()) <= 1 and float(out.min()) >= 0
    assert not torch.equal(out, batch)


def _toy_data(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = (labels.view(-1, 1, 1, 1) * 200 + torch.randint(0, 55, (n, 8, 8, 3), generator=g)).to(torch.uint8)
    return images, labels


def _toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))


def test_training_learns_and_resumes_identically(tmp_path):
    images, labels = _toy_data()
    mixture = NoiseMixture([None, IsotropicGaussian(0.1)])
    config = TrainConfig(epochs=3, batch_size=8, lr=0.1)  # 8 steps an epoch
    straight = _toy_model()
    train(straight, images, labels, mixture, config, tmp_path / "a.ckpt", log=lambda _: None)

    interrupted = _toy_model()
    with pytest.raises(Cancelled):
        train(
            interrupted,
            images,
            labels,
            mixture,
            config,
            tmp_path / "b.ckpt",
            progress=lambda done, total: done > 12,
            log=lambda _: None,
        )
    assert torch.load(tmp_path / "b.ckpt", weights_only=True)["epoch"] == 1
    resumed = _toy_model()
    messages = []
    train(resumed, images, labels, mixture, config, tmp_path / "b.ckpt", log=messages.append)
    assert any("resuming" in m for m in messages)
    torch.testing.assert_close(resumed.state_dict(), straight.state_dict())
    x = images.permute(0, 3, 1, 2).float() / 255
    assert float((straight(x).argmax(1) == labels).float().mean()) > 0.9


def test_resume_refuses_other_settings(tmp_path):
    images, labels = _toy_data()
    mixture = NoiseMixture([None])
    train(
        _toy_model(),
        images,
        labels,
        mixture,
        TrainConfig(epochs=1, batch_size=16),
        tmp_path / "c.ckpt",
        log=lambda _: None,
    )
    with pytest.raises(ValueError, match="other settings"):
        train(
            _toy_model(),
            images,
            labels,
            mixture,
            TrainConfig(epochs=3, batch_size=16),
            tmp_path / "c.ckpt",
            log=lambda _: None,
        )


def test_adversarial_share_replaces_part_of_each_batch(tmp_path):
    images, labels = _toy_data()
    pool = (torch.zeros(5, 3, 8, 8), torch.ones(5, dtype=torch.long))
    seen = []

    class Spy(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _toy_model()

        def forward(self, x):
            seen.append(int((x.flatten(1) == 0).all(dim=1).sum()))
            return self.inner(x)

    config = TrainConfig(epochs=1, batch_size=16, adversarial_fraction=0.5)
    train(
        Spy(), images, labels, NoiseMixture([None]), config, tmp_path / "d.ckpt", adversarial=pool, log=lambda _: None
    )
    assert seen == [8, 8, 8, 8]


def test_train_command_writes_weights_and_card(tmp_path, monkeypatch):
    monkeypatch.setenv("DSMOOTH_DATA_DIR", str(write_fake_cifar10(tmp_path / "data", per_class=3)))
    out = tmp_path / "model" / "tiny.pt"
    code = main(
        [
            "train",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "10",
            "--eval-size",
            "20",
            "--noise",
            "none",
            "randsmooth:0.25",
            "lsmooth:0.25",
        ]
    )
    assert code == 0 and out.exists() and not out.with_suffix(".ckpt").exists()
    card = json.loads(out.with_suffix(".json").read_text())
    assert set(card["noisy_accuracy"]) == {"RandSmooth sigma=0.25", "LSmooth sigma=0.25"}
    assert 0 <= card["clean_accuracy"] <= 1 and card["train_size"] == 30 and card["epochs"] == 1
    assert "JPEG" in card["data_note"] and card["command"].endswith("lsmooth:0.25")
    state = torch.load(out, weights_only=True)
    assert "fc.weight" in state and card["weights_sha256"]
