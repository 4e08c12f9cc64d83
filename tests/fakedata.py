"""A tiny CIFAR-10-shaped data directory, so CLI and app tests run without the real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dsmooth_core.models import CIFAR10_CLASSES


def write_fake_cifar10(root: Path, per_class: int = 4, seed: int = 0) -> Path:
    """Write ``root/cifar10/{train,test}.npz`` with learnable class-coloured images, sorted by class."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        labels = np.repeat(np.arange(10), per_class).astype(np.int64)
        colours = rng.integers(0, 256, size=(10, 3))
        images = colours[labels][:, None, None, :] + rng.normal(0, 20, size=(len(labels), 32, 32, 3))
        np.savez(
            folder / f"{split}.npz",
            images=np.clip(images, 0, 255).astype(np.uint8),
            labels=labels,
            classes=np.array(CIFAR10_CLASSES),
        )
    return root
