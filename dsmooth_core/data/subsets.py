"""Class-balanced evaluation subsets, so a small certification run still covers every class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def balanced_subset(labels: Sequence[int] | np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of ``size`` items, ``size // n_classes`` per class plus one for some classes.

    Which classes take the remainder and which items are drawn both follow ``seed``. The result is
    interleaved (one item of each class in turn, classes in label order), so any prefix is as
    balanced as possible.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if size < 0:
        raise ValueError(f"size must be non-negative, got {size}")
    classes, counts = np.unique(labels, return_counts=True)
    if size > 0 and len(classes) == 0:
        raise ValueError("no labels to draw from")
    base, extra = divmod(size, max(len(classes), 1))
    if size > 0 and base > counts.min():
        raise ValueError(_too_large(size, counts))
    rng = np.random.default_rng(seed)
    quota = np.full(len(classes), base)
    if extra:
        roomy = np.flatnonzero(counts > base)
        if len(roomy) < extra:
            raise ValueError(_too_large(size, counts))
        quota[rng.permutation(roomy)[:extra]] += 1
    picks = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota, strict=True)]
    rounds = [pick[r] for r in range(int(quota.max(initial=0))) for pick in picks if r < len(pick)]
    return np.asarray(rounds, dtype=np.int64)


def _too_large(size: int, counts: np.ndarray) -> str:
    limit = len(counts) * int(counts.min()) + int(np.sum(counts > counts.min()))
    return (
        f"a class-balanced subset of {size} is impossible: the smallest of the {len(counts)} classes "
        f"has {int(counts.min())} items, so at most {limit} can be drawn"
    )
