"""Noise-augmented training (Cohen et al.'s recipe) with a mixture of smoothing distributions.

A smoothed classifier is only as good as its base model under that noise, so the base model is
trained on noisy copies. A mixture lets one model serve RandSmooth, LSmooth and DSmooth at several
noise levels; the optional adversarial share is the paper's 50:50 clean/adversarial fine-tuning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.noise import SmoothingNoise, make_noise
from dsmooth_core.progress import ProgressCallback, report


def parse_noise(spec: str, covariance: LowRankCovariance | None = None) -> SmoothingNoise | None:
    """'none' or 'METHOD:SIGMA' with METHOD one of randsmooth, lsmooth, dsmooth."""
    method, _, value = spec.partition(":")
    if method == "none":
        return None
    if not value:
        raise ValueError(f"noise '{spec}' needs a sigma, e.g. {method}:0.25")
    return make_noise(method, float(value), covariance)


def noise_label(noise: SmoothingNoise | None) -> str:
    return "clean" if noise is None else f"{noise.name} sigma={noise.sigma:g}"


class NoiseMixture:
    """Adds to each image of a batch a draw from one mixture component chosen uniformly at random."""

    def __init__(self, components: Sequence[SmoothingNoise | None]) -> None:
        if not components:
            raise ValueError("the noise mixture needs at least one component")
        self.components = list(components)

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        choice = torch.randint(len(self.components), (batch.shape[0],), generator=generator)
        noisy = batch.clone()
        for index, noise in enumerate(self.components):
            rows = (choice == index).nonzero().flatten()
            if noise is not None and rows.numel():
                draws = noise.sample(rows.numel(), tuple(batch.shape[1:]), generator, batch.device)
                noisy[rows.to(batch.device)] += draws
        return noisy


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    seed: int = 0
    adversarial_fraction: float = 0.0


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crops and horizontal flips, the standard CIFAR augmentation."""
    n, _, h, w = batch.shape
    padded = F.pad(batch, (4, 4, 4, 4))
    dx, dy = torch.randint(9, (2, n), generator=generator).tolist()
    crops = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    flip = torch.rand(n, generator=generator) < 0.5
    crops[flip] = crops[flip].flip(-1)
    return crops


def to_float(images_uint8: torch.Tensor) -> torch.Tensor:
    """(N,H,W,C) uint8 to (N,C,H,W) float in [0,1]."""
    return images_uint8.permute(0, 3, 1, 2).float().div_(255)


def train(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    mixture: NoiseMixture,
    config: TrainConfig,
    checkpoint: Path,
    adversarial: tuple[torch.Tensor, torch.Tensor] | None = None,
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] = print,
) -> float:
    """Train in place, resuming from ``checkpoint`` when it exists; returns the wall time spent.

    ``images`` are uint8 (N,H,W,C); ``adversarial`` is an optional pool of (images in [0,1], labels)
    from which ``config.adversarial_fraction`` of every batch is drawn.
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(len(images) / config.batch_size)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    start_epoch, spent = 0, 0.0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        if state["config"] != asdict(config):
            raise ValueError(f"{checkpoint} was written with other settings; delete it to start over")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        start_epoch, spent = state["epoch"], state["seconds"]
        log(f"resuming from {checkpoint} at epoch {start_epoch}")
    total = config.epochs * steps_per_epoch
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        model.train()
        order = torch.randperm(len(images), generator=generator)
        seen, correct, loss_sum = 0, 0, 0.0
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            batch, target = augment(to_float(images[index]), generator), labels[index]
            if adversarial is not None and config.adversarial_fraction > 0:
                batch, target = _mix_adversarial(batch, target, adversarial, config, generator)
            batch = mixture(batch, generator).to(device).contiguous(memory_format=torch.channels_last)
            target = target.to(device)
            logits = model(batch)
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(target)
            correct += int((logits.argmax(1) == target).sum())
            loss_sum += loss.item() * len(target)
            report(progress, epoch * steps_per_epoch + step + 1, total)
            if step % 50 == 0:
                log(f"epoch {epoch + 1}/{config.epochs} step {step}/{steps_per_epoch} loss {loss_sum / seen:.3f}")
        spent += time.perf_counter() - began
        log(
            f"epoch {epoch + 1} done: train loss {loss_sum / seen:.3f}, noisy train acc "
            f"{correct / seen:.3f}, {time.perf_counter() - began:.0f}s"
        )
        torch.save(
            {
                "config": asdict(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "epoch": epoch + 1,
                "seconds": spent,
            },
            checkpoint,
        )
    model.eval()
    return spent


def _mix_adversarial(
    batch: torch.Tensor,
    target: torch.Tensor,
    pool: tuple[torch.Tensor, torch.Tensor],
    config: TrainConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace a share of the batch by adversarial examples drawn from the pool."""
    count = round(len(batch) * config.adversarial_fraction)
    pick = torch.randint(len(pool[0]), (count,), generator=generator)
    return torch.cat([batch[count:], pool[0][pick]]), torch.cat([target[count:], pool[1][pick]])


@torch.inference_mode()
def accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    noise: SmoothingNoise | None,
    generator: torch.Generator,
    batch_size: int = 500,
) -> float:
    """Top-1 accuracy of the base model on ``images`` in [0,1] under one draw of ``noise`` each."""
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        if noise is not None:
            batch = batch + noise.sample(len(batch), tuple(batch.shape[1:]), generator, device)
        correct += int((model(batch).argmax(1).cpu() == labels[start : start + batch_size]).sum())
    return correct / len(images)
