"""The work of the app's background jobs: library calls only, no streamlit (they run in a worker thread).

Each function takes the job's :class:`~dsmooth_lab_ui.jobs.Progress` and returns plain results
(tensors on the CPU, dicts); the page's ``deliver`` turns them into session records. Sub-results
that another job may need again (one method's certificate, one method's votes) are kept in the
job manager's result cache under keys of small values, as ``st.cache_data`` kept them before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from dsmooth_core import certify
from dsmooth_core.attacks import AttackConfig, square_then_fgsm
from dsmooth_core.data import ImageSet, balanced_subset
from dsmooth_core.profiles import ThreatProfile, build_profile
from dsmooth_lab_ui import compute
from dsmooth_lab_ui.jobs import MANAGER, Progress


def attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    label: int,
    config_items: tuple[tuple[str, Any], ...],
    seed: int,
    progress: Progress,
) -> dict[str, Any]:
    """Square + FGSM on one image; tensors come back on the CPU."""
    progress.stage("Square Attack iterations")
    result = square_then_fgsm(
        model,
        x.unsqueeze(0),
        torch.tensor([label]),
        AttackConfig(**dict(config_items)),
        generator=torch.Generator().manual_seed(seed),
        progress=progress,
    )
    return {
        "clean": result.clean[0].cpu(),
        "adversarial": result.adversarial[0].cpu(),
        "perturbation": result.perturbation[0].cpu(),
        "clean_pred": int(result.clean_pred[0]),
        "adv_pred": int(result.adv_pred[0]),
        "success": bool(result.success[0]),
        "queries": int(result.queries[0]),
        "linf": float(result.linf[0]),
        "l2": float(result.l2[0]),
        "l1": float(result.l1[0]),
    }


def certificates(
    model: torch.nn.Module,
    x: torch.Tensor,
    runs: Sequence[tuple[str, Any, Hashable]],
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    seed: int,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    """DCERT for each ``(name, noise, cache key)``; every method starts from the same seed."""
    out: dict[str, dict[str, Any]] = {}
    for name, noise, key in runs:

        def one(noise=noise) -> dict[str, Any]:
            progress.stage(f"{noise.method}: noise draws")
            generator = torch.Generator().manual_seed(seed)
            return dataclasses.asdict(certify(model, x, noise, n0, n, alpha, batch_size, generator, progress=progress))

        out[name] = MANAGER.memo(("certificate", key), one)
    return out


def votes(
    model: torch.nn.Module,
    x: torch.Tensor,
    runs: Sequence[tuple[str, Any, Hashable]],
    count: int,
    batch_size: int,
    seed: int,
    progress: Progress,
) -> dict[str, dict[str, Any]]:
    """The base model's votes under each ``(name, noise, cache key)`` (``noise=None``: no noise)."""
    out: dict[str, dict[str, Any]] = {}
    for name, noise, key in runs:

        def one(noise=noise, name=name) -> dict[str, Any]:
            progress.stage(f"{name}: base-model votes")
            generator = torch.Generator().manual_seed(seed)
            return compute.noise_votes(model, x, noise, count, batch_size, generator, progress=progress)

        out[name] = MANAGER.memo(("votes", key), one)
    return out


def profile(
    model: torch.nn.Module,
    images: ImageSet,
    split: str,
    n_images: int,
    subset_seed: int,
    attack_items: tuple[tuple[str, Any], ...],
    k: int,
    keep: str,
    seed: int,
    batch_size: int,
    progress: Progress,
) -> ThreatProfile:
    """Attack a seeded class-balanced calibration subset and fit the covariance."""
    progress.stage("Attacking the calibration images")
    indices = balanced_subset(images.labels, n_images, subset_seed)
    return build_profile(
        model,
        images.tensor(indices),
        torch.from_numpy(images.labels[indices]),
        dataset="cifar10",
        split=split,
        indices=[int(i) for i in indices],
        attack=AttackConfig(**dict(attack_items)),
        k=k,
        keep=keep,  # type: ignore[arg-type]
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
