"""A tiny classifier that trains in about a second, for tests that need a model an attack can fool."""

from __future__ import annotations

import torch
from torch import nn

SHAPE = (3, 8, 8)
CLASSES = 10


def prototype_mlp(held_out: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An MLP trained on noisy copies of 10 random prototype images, and ``held_out`` fresh images
    (B, 3, 8, 8) with labels that it classifies correctly."""
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.rand(CLASSES, *SHAPE, generator=gen)

    def sample(count: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, CLASSES, (count,), generator=gen)
        noise = 0.15 * torch.randn(count, *SHAPE, generator=gen)
        return (prototypes[labels] + noise).clamp(0, 1), labels

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(192, 64), nn.ReLU(), nn.Linear(64, CLASSES))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x_train, y_train = sample(2000)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x_train), y_train).backward()
        optimizer.step()
    net.eval().requires_grad_(False)
    x_test, y_test = sample(200)
    with torch.no_grad():
        correct = net(x_test).argmax(1) == y_test
    assert correct.float().mean() > 0.9, "the toy model did not learn"
    return net, x_test[correct][:held_out], y_test[correct][:held_out]
