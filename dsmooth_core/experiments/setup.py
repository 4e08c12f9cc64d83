"""What a run needs before certifying: a reproducible model and the one threat profile all methods share."""

from __future__ import annotations

from pathlib import Path

import torch

from dsmooth_core.attacks import AttackConfig
from dsmooth_core.data import ImageSet, balanced_subset
from dsmooth_core.models import Normalized, load_model
from dsmooth_core.profiles import Keep, ThreatProfile, load_or_build_profile
from dsmooth_core.progress import ProgressCallback

CALIBRATION_SPLIT = "train"
UNTRAINED_SEED = 0


def load_experiment_model(
    name: str, device: str | torch.device, pretrained: bool = True, weights: str | Path | None = None
) -> Normalized:
    """``load_model``, with untrained weights drawn from a fixed seed.

    Records are keyed by the weights' hash, so untrained weights (offline demos and tests) must be the
    same in every process for shards and resumed runs to line up.
    """
    if pretrained or weights is not None:
        return load_model(name, device, weights=weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(UNTRAINED_SEED)
        return load_model(name, device, pretrained=False)


def prepare_profile(
    model: torch.nn.Module,
    calibration: ImageSet,
    *,
    size: int,
    k: int,
    attack: AttackConfig,
    cache_dir: str | Path,
    seed: int,
    keep: Keep = "successful",
    dataset: str = "cifar10",
    batch_size: int | None = None,
    progress: ProgressCallback | None = None,
) -> ThreatProfile:
    """Attack a class-balanced calibration subset of the training split once and fit rank ``k`` (cached)."""
    indices = balanced_subset(calibration.labels, size, seed)
    return load_or_build_profile(
        model,
        calibration.tensor(indices),
        torch.from_numpy(calibration.labels[indices]),
        cache_dir=cache_dir,
        dataset=dataset,
        split=CALIBRATION_SPLIT,
        indices=[int(i) for i in indices],
        attack=attack,
        k=k,
        keep=keep,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
