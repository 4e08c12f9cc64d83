"""FGSM, l2 (the paper's fast gradient method) and l_inf (docs/MATH.md section 5)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dsmooth_core.attacks import fgsm_l2, fgsm_linf, fgsm_step_l2, fgsm_step_linf, input_gradient


@pytest.fixture
def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.rand(6, 3, 6, 6, generator=gen), torch.randint(0, 5, (6,), generator=gen)


class _Constant(nn.Module):
    """Logits that ignore the input: the gradient is exactly zero."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([1.0, 0.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], 3)


def _loss(model, x, y):
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y, reduction="none")


def test_l2_step_has_norm_eps2(model, batch):
    x, y = batch
    step = fgsm_step_l2(model, x, y, 0.7)
    assert step.shape == x.shape
    torch.testing.assert_close(step.flatten(1).norm(dim=1), torch.full((6,), 0.7), rtol=1e-5, atol=0)
    assert torch.allclose(fgsm_l2(model, x, y, 0.7), (x + step).clamp(0, 1))


def test_l2_step_survives_a_tiny_gradient(model, batch):
    """A very confident model has a gradient around 1e-23: its squares underflow in float32."""
    x, _ = batch
    head = model[-1]
    with torch.no_grad():
        head.weight[0].zero_()
        head.bias.copy_(torch.tensor([50.0, 0.0, 0.0, 0.0, 0.0]))
    labels = torch.zeros(6, dtype=torch.long)
    grad = input_gradient(model, x, labels)
    assert 0 < grad.abs().max() < 1e-20
    assert (grad.flatten(1) ** 2).sum(1).max() < 1e-40  # the plain sum of squares has underflowed
    norms = fgsm_step_l2(model, x, labels, 0.5).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.full((6,), 0.5), rtol=1e-5, atol=0)


def test_linf_step_is_eps_times_sign(model, batch):
    x, y = batch
    step = fgsm_step_linf(model, x, y, 0.1)
    assert step.abs().max() == pytest.approx(0.1)
    assert torch.equal(step, 0.1 * input_gradient(model, x, y).sign())
    assert torch.allclose(fgsm_linf(model, x, y, 0.1), (x + step).clamp(0, 1))


@pytest.mark.parametrize("attack", [fgsm_l2, fgsm_linf])
def test_raises_the_loss_stays_in_box_and_keeps_inputs(model, batch, attack):
    x, y = batch
    x_before = x.clone()
    adversarial = attack(model, x, y, 0.05)
    assert torch.equal(x, x_before)
    assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert (_loss(model, adversarial, y) > _loss(model, x, y)).all()


@pytest.mark.parametrize("attack", [fgsm_step_l2, fgsm_step_linf])
def test_no_grad_left_and_frozen_models_work(model, batch, attack):
    x, y = batch
    attack(model, x, y, 0.5)
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    assert attack(model, x, y, 0.5).abs().max() > 0
    x_leaf = x.clone().requires_grad_(True)
    attack(model, x_leaf, y, 0.5)
    assert x_leaf.grad is None


@pytest.mark.parametrize("attack", [fgsm_step_l2, fgsm_step_linf])
def test_zero_gradient_means_no_step(batch, attack):
    x, _ = batch
    y = torch.zeros(6, dtype=torch.long)
    assert torch.equal(attack(_Constant(), x, y, 0.5), torch.zeros_like(x))


def test_rejects_bad_radius(model, batch):
    x, y = batch
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError):
            fgsm_l2(model, x, y, bad)
        with pytest.raises(ValueError):
            fgsm_linf(model, x, y, bad)
