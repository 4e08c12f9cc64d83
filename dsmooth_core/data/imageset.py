"""An in-memory labelled image set, kept as uint8 so 50,000 CIFAR images cost 150 MB, not 600."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True, eq=False)
class ImageSet:
    """``images`` uint8 ``(N, H, W, C)``, ``labels`` int64 ``(N,)``, ``classes`` the label names."""

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if self.labels.dtype != np.int64 or self.labels.shape != (len(self.images),):
            raise ValueError(
                f"labels must be int64 of shape ({len(self.images)},), got {self.labels.dtype} {self.labels.shape}"
            )
        if len(self.labels) and not 0 <= self.labels.min() <= self.labels.max() < len(self.classes):
            raise ValueError(f"labels must lie in [0, {len(self.classes)})")

    def __len__(self) -> int:
        return len(self.labels)

    def tensor(self, indices: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The chosen images as a float ``(B, C, H, W)`` batch in ``[0, 1]``."""
        batch = self.images[np.asarray(indices, dtype=np.int64)]
        return torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)
