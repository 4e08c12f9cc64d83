"""The work of the app's background jobs: library calls only, no streamlit.

Pages hand these to a job as ``functools.partial`` with every argument but the progress callback,
so the job runs in the worker process (:mod:`dsmooth_lab_ui.worker`). Each function takes the job's
progress callback last and returns the library's objects (tensors on the CPU); the page's
``deliver`` turns them into session records. Sub-results that another job may need again (one
method's certificate, one method's votes) are kept in the result cache of the process the work runs
in (the worker's, which lives between jobs) under keys of small values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence

import numpy as np
import torch

from dsmooth_core import Certificate, SmoothingNoise, certify
from dsmooth_core.attacks import AttackConfig, AttackResult, square_then_fgsm
from dsmooth_core.backends import inference_model
from dsmooth_core.data import ImageSet
from dsmooth_core.device import generator_for
from dsmooth_core.profiles import Calibration, ThreatProfile, calibrate
from dsmooth_lab_ui import compute
from dsmooth_lab_ui.jobs import MANAGER, Progress


def attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    label: int,
    config: AttackConfig,
    seed: int,
    progress: Progress,
) -> AttackResult:
    """Square + FGSM on one image (a batch of one); tensors come back on the CPU."""
    progress.stage("Square Attack iterations")
    result = square_then_fgsm(
        model,
        x.unsqueeze(0),
        torch.tensor([label]),
        config,
        generator=generator_for(model, seed),
        progress=progress,
    )
    return dataclasses.replace(result, **{f.name: getattr(result, f.name).cpu() for f in dataclasses.fields(result)})


def certificates(
    model: torch.nn.Module,
    x: torch.Tensor,
    runs: Sequence[tuple[SmoothingNoise, Hashable]],
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    seed: int,
    progress: Progress,
) -> list[tuple[SmoothingNoise, Certificate]]:
    """DCERT for each ``(noise, cache key)``; every method starts from the same seed."""
    model, _ = inference_model(model)  # ONNX Runtime on a CPU, with the job's threads; else torch as given
    out: list[tuple[SmoothingNoise, Certificate]] = []
    for noise, key in runs:

        def one(noise: SmoothingNoise = noise) -> Certificate:
            progress.stage(f"{noise.name}: noise draws")
            generator = generator_for(model, seed)
            return certify(model, x, noise, n0, n, alpha, batch_size, generator, progress=progress)

        out.append((noise, MANAGER.memo(("certificate", key), one)))
    return out


def votes(
    model: torch.nn.Module,
    x: torch.Tensor,
    runs: Sequence[tuple[SmoothingNoise, Hashable]],
    count: int,
    batch_size: int,
    seed: int,
    progress: Progress,
) -> dict[str, dict[str, np.ndarray]]:
    """The base model's votes under each ``(noise, cache key)``, by the noise's display name."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for noise, key in runs:

        def one(noise: SmoothingNoise = noise) -> dict[str, np.ndarray]:
            progress.stage(f"{noise.name}: base-model votes")
            generator = generator_for(model, seed)
            return compute.noise_votes(model, x, noise, count, batch_size, generator, progress=progress)

        out[noise.name] = MANAGER.memo(("votes", key), one)
    return out


def profile(
    model: torch.nn.Module,
    images: ImageSet,
    calibration: Calibration,
    batch_size: int,
    progress: Progress,
) -> ThreatProfile:
    """Attack the calibration's class-balanced subset of ``images`` and fit the covariance."""
    progress.stage("Attacking the calibration images")
    return calibrate(model, images, calibration, batch_size=batch_size, progress=progress)
