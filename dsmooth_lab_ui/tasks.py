"""The work of the app's background jobs: library calls only, no streamlit, no scheduler.

Pages hand these to a job as ``functools.partial`` with every argument but the progress callback,
so the job runs in the worker process (:mod:`dsmooth_lab_ui.worker`). Each function takes the job's
progress callback last and returns the library's objects (tensors on the CPU); the page's
``deliver`` turns them into session records. Sub-results that another job may need again (one
method's certificate, one method's votes) are kept in :data:`memo.SUB_RESULTS` of the process the
work runs in (the worker's, which lives between jobs, shared by every session) under the key the page
built with ``dsmooth_core.settings.result_key`` from the identities of all their inputs.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from dsmooth_core import Certificate, SmoothingNoise, certify, predict
from dsmooth_core.attacks import AttackConfig, AttackResult, square_then_fgsm
from dsmooth_core.audit import AuditResult, AuditSettings
from dsmooth_core.audit import audit as audit_certificate
from dsmooth_core.backends import OnnxForward, inference_model
from dsmooth_core.data import ImageSet, load_cifar10
from dsmooth_core.device import generator_for
from dsmooth_core.experiments import (
    ExperimentSpec,
    RecordStore,
    RunSummary,
    evaluation_indices,
    experiment_calibration,
    run_experiment,
)
from dsmooth_core.profiles import Calibration, ThreatProfile, calibrate
from dsmooth_core.scale import RayOptions, connect, run_experiment_on_ray
from dsmooth_core.seeds import derive_seed
from dsmooth_lab_ui import compute
from dsmooth_lab_ui.memo import SUB_RESULTS
from dsmooth_lab_ui.progress import JobProgress as Progress

RECORDS_FILE = "records.jsonl"
T = TypeVar("T")


def onnx_graph(model: torch.nn.Module, backend: str, progress: Progress) -> tuple[bytes | None, str]:
    """``model``'s checked ONNX graph on ``backend`` (``None`` where it stays on torch) and the note saying why.

    For an uploaded program: exporting and probing it run it, which only a worker may do (it can be ended).
    """
    progress.stage("Exporting the model's forward to ONNX Runtime")
    fast, note = inference_model(model, backend)
    return (fast.graph if isinstance(fast, OnnxForward) else None), note


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


def _each_method(
    runs: Sequence[tuple[SmoothingNoise, Hashable]],
    kind: str,
    step: str,
    compute: Callable[[SmoothingNoise], T],
    progress: Progress,
    *also: Hashable,
) -> list[tuple[SmoothingNoise, T]]:
    """``compute(noise)`` for each ``(noise, cache key)``, kept in :data:`SUB_RESULTS` under ``(kind, key,
    *also)``: another job asking for one method's result with the same inputs reuses it."""

    def one(noise: SmoothingNoise) -> T:
        progress.stage(f"{noise.name}: {step}")
        return compute(noise)

    return [(noise, SUB_RESULTS.memo((kind, key, *also), functools.partial(one, noise))) for noise, key in runs]


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
    """DCERT for each ``(noise, cache key)``; every method starts from the same seed.

    ``model`` is the forward the page prepared (:mod:`dsmooth_lab_ui.forward`): on ONNX Runtime it carries
    its checked graph, so the job exports and probes nothing, and the three methods share its session,
    which follows the job's thread budget. The keys name that forward, so it is used as given.
    """

    def one(noise: SmoothingNoise) -> Certificate:
        generator = generator_for(model, seed)
        return certify(model, x, noise, n0, n, alpha, batch_size, generator, progress=progress)

    return _each_method(runs, "certificate", "noise draws", one, progress)


def certificates_under_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    runs: Sequence[tuple[SmoothingNoise, Hashable]],
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    seed: int,
    attacked: tuple[torch.Tensor, Hashable],
    progress: Progress,
) -> tuple[list[tuple[SmoothingNoise, Certificate]], dict[str, int]]:
    """The certificates, and PREDICT (same noise, n and alpha) at the attacked image ``attacked = (x + delta,
    attack key)`` per method by display name (ABSTAIN = -1): does a successful attack fool the smoothed classifier?"""
    out = certificates(model, x, runs, n0, n, alpha, batch_size, seed, progress)
    adversarial, attack_key = attacked

    def one(noise: SmoothingNoise) -> int:
        generator = generator_for(model, derive_seed(seed, 0, f"{noise.key}:adversarial"))
        return predict(model, adversarial, noise, n, alpha, batch_size, generator, progress=progress)

    predictions = _each_method(runs, "attacked prediction", "PREDICT at the attacked image", one, progress, attack_key)
    return out, {noise.name: prediction for noise, prediction in predictions}


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

    def one(noise: SmoothingNoise) -> dict[str, np.ndarray]:
        generator = generator_for(model, seed)
        return compute.noise_votes(model, x, noise, count, batch_size, generator, progress=progress)

    return {noise.name: v for noise, v in _each_method(runs, "votes", "base-model votes", one, progress)}


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


def audit(
    model: torch.nn.Module,
    x: torch.Tensor,
    noise: SmoothingNoise,
    certificate: Certificate,
    settings: AuditSettings,
    seed: int,
    progress: Progress,
) -> AuditResult:
    """Attack ``certificate`` inside its own region (the Certify page's audit)."""
    progress.stage(f"{noise.name}: attack and PREDICT draws")
    return audit_certificate(model, x, noise, certificate, settings, generator_for(model, seed), progress)


@dataclass(frozen=True)
class Cifar10Folder:
    """Where the CIFAR-10 splits are, with their files' stamps (a change reloads them).

    Why not the image sets themselves: the train split is 150 MB, read faster from disk in the
    worker (and kept there) than pickled to it for every run.
    """

    root: str
    test_stamp: str
    train_stamp: str

    def split(self, name: str) -> ImageSet:
        return _cifar10(name, self.root, self.test_stamp if name == "test" else self.train_stamp)


@functools.lru_cache(maxsize=2)
def _cifar10(split: str, root: str, stamp: str) -> ImageSet:
    return load_cifar10(split, Path(root), download=False)


def forget_data() -> None:
    """Drop the image sets kept by :class:`Cifar10Folder` (with the sub-results, on "clear")."""
    _cifar10.cache_clear()


def experiment(
    model: torch.nn.Module,
    data: Cifar10Folder,
    spec: ExperimentSpec,
    sizes: dict[str, Any],
    progress: Progress,
) -> RunSummary:
    """The Experiments page's run: calibrate (cached in the records folder) and certify the records still missing."""
    folder: Path = sizes["folder"]
    test, train = data.split("test"), data.split("train")
    indices = evaluation_indices(test.labels, sizes["size"], spec.seed)
    progress.stage("Calibration attack (cached after the first run)")
    profile = calibrate(
        model,
        train,
        experiment_calibration(spec, sizes["calibration"], max(spec.ks)),
        cache_dir=folder / "profiles",
        batch_size=sizes["batch"],
        progress=progress,
    )
    ray: RayOptions | None = sizes["ray"]
    if ray is None:
        runner = run_experiment
        progress.stage("Attacking and certifying")
    else:
        connect(ray.address)
        runner = functools.partial(run_experiment_on_ray, options=ray)
        progress.stage(f"Attacking and certifying on the Ray cluster at {ray.address} (images)")
    return runner(
        model,
        test,
        indices,
        profile,
        spec,
        RecordStore(folder / RECORDS_FILE),
        batch_size=sizes["batch"],
        progress=progress,
    )
