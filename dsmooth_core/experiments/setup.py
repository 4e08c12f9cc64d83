"""What a run needs before certifying: a reproducible model, and how its one shared threat profile is calibrated."""

from __future__ import annotations

from pathlib import Path

import torch

from dsmooth_core.experiments.plan import ExperimentSpec
from dsmooth_core.models import Normalized, load_model
from dsmooth_core.profiles import Calibration, Keep

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


def experiment_calibration(spec: ExperimentSpec, size: int, k: int, keep: Keep = "successful") -> Calibration:
    """The calibration of an experiment: a balanced train subset attacked with the evaluated threat.

    The run's seed draws the subset and seeds the attack, so the CLI and the app build the same profile.
    """
    return Calibration(
        size=size, attack=spec.attack, k=k, split=CALIBRATION_SPLIT, subset_seed=spec.seed, keep=keep, seed=spec.seed
    )
