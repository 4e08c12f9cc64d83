"""Certify a subset of images with every setting of a grid, against one attack and one profile.

Per image: one Square + FGSM run (seeded from the image), then one certificate per setting not yet
in the store, each written as soon as it exists. The perturbation is measured in every metric once
and checked against each certificate in that certificate's own metric. Settings that differ only in
alpha share one set of noise draws: the votes do not depend on alpha (``at_level``).

Where the attack is successful (the base model is right on the clean image and wrong on the attacked
one), each setting also runs Cohen's PREDICT at the attacked image, with n draws from a stream of its own
(``<method>:adversarial``): does the attack fool the smoothed classifier too? Images without a
successful attack skip it, as its n forward passes would answer nothing asked.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from dsmooth_core.attacks import square_then_fgsm
from dsmooth_core.backends import forward_name
from dsmooth_core.certify import (
    Certificate,
    at_level,
    certification_checks,
    certify,
    predict_from_votes,
    predict_votes,
)
from dsmooth_core.comparison import compare
from dsmooth_core.covariance import LowRankCovariance
from dsmooth_core.data import ImageSet
from dsmooth_core.device import generator_for, model_device
from dsmooth_core.errors import InputRefused
from dsmooth_core.experiments.geometry import perturbation_distances
from dsmooth_core.experiments.plan import ExperimentSpec, Setting, derive_seed
from dsmooth_core.experiments.records import Record, RecordStore, record_key
from dsmooth_core.noise import SmoothingNoise, make_noise, method_class
from dsmooth_core.profiles import ThreatProfile, check_usable
from dsmooth_core.progress import ProgressCallback
from dsmooth_core.settings import forward_identity, result_key


@dataclass(frozen=True)
class _Attacked:
    """One image with the perturbation its attack found."""

    idx: int
    x: torch.Tensor
    label: int
    perturbation: torch.Tensor
    adversarial: torch.Tensor  # the attacked image the base model was evaluated at (x + perturbation)
    success: bool  # wrong on the attacked image (also when already wrong on the clean one)
    clean_correct: bool

    @property
    def base_fooled(self) -> bool:
        """A successful attack: the base model is right on the clean image and wrong on the attacked one."""
        return self.clean_correct and self.success


@dataclass
class RunMemo:
    """What several runs in one process may share, because it does not depend on the run's profile:
    an image's attack (per threat and seed) and its clean certificates (per noise). A study of several
    threats then certifies RandSmooth and LSmooth once per image instead of once per threat, and the
    records equal those of separate runs (every draw is seeded from the image, never from the run)."""

    attacks: dict[str, _Attacked] = field(default_factory=dict)
    certificates: dict[str, Certificate] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    images: int
    images_skipped: int  # every record of the image was already in the store
    records_written: int


class _Tracker:
    """Maps the progress of each step (attack, certificate) onto one bar over the whole run."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback = callback
        self.total = total
        self.done = 0

    def part(self, units: int) -> ProgressCallback | None:
        if self.callback is None:
            return None
        start, callback = self.done, self.callback

        def forward(done: int, total: int) -> bool | None:
            return callback(start + min(units, units * done // max(total, 1)), self.total)

        return forward

    def advance(self, units: int) -> None:
        """Move past a finished step (whose own progress already reported its end)."""
        self.done += units


@dataclass(frozen=True)
class RunPlan:
    """What a run still has to do: each image's missing (setting, identity) pairs, and the noises they use."""

    todo: dict[int, list[tuple[Setting, dict]]]
    noises: dict[tuple, SmoothingNoise]

    @property
    def images_skipped(self) -> int:
        """Images every record of which is already in the store."""
        return sum(1 for jobs in self.todo.values() if not jobs)


def plan_run(
    model: torch.nn.Module,
    indices: Sequence[int],
    profile: ThreatProfile,
    spec: ExperimentSpec,
    store: RecordStore,
    *,
    dataset: str = "cifar10",
    split: str = "test",
) -> RunPlan:
    """Check the model and images against the profile, and list the records ``store`` lacks.

    Shared by every engine, so a run on any of them writes the same records under the same keys. The
    records are keyed by the model's identity, so another normalization, input size or program never
    reuses a record; a file with records that do not name it (an earlier version's) is refused.
    """
    if store.without_identity:
        raise InputRefused(
            f"{store.path} holds {store.without_identity} record(s) of an earlier version, which do not name the "
            "model's identity (its normalization, input size or program), so this run cannot tell which of them "
            "are its own; write to another --records file (the old one still analyses)"
        )
    check_usable(profile, model, tuple(model.info.input_shape), dataset, split, indices)
    max_k = profile.covariance.k
    if any(method_class(m).needs_profile for m in spec.methods) and max(spec.ks) > max_k:
        warnings.warn(f"the profile has rank {max_k}: DSmooth's ranks above it use k = {max_k}", stacklevel=3)
    settings = spec.settings(max_k)
    context = {
        "dataset": dataset,
        "split": split,
        "model": model.info.name,
        "model_hash": model.info.weights_hash,
        "model_identity": model.info.identity,
        **forward_identity(forward_name(model)),
        "profile_hash": profile.covariance.content_hash(),
        "profile_k": max_k,
        "attack": spec.attack_name,
        "attack_config": spec.attack.to_dict(),
        "seed": spec.seed,
        "n0": spec.n0,
    }
    todo = {int(idx): _missing(store, context, settings, int(idx)) for idx in indices}
    return RunPlan(todo=todo, noises=_noises(settings, profile.covariance))


def run_experiment(
    model: torch.nn.Module,
    images: ImageSet,
    indices: Sequence[int],
    profile: ThreatProfile,
    spec: ExperimentSpec,
    store: RecordStore,
    *,
    dataset: str = "cifar10",
    split: str = "test",
    batch_size: int = 400,
    progress: ProgressCallback | None = None,
    memo: RunMemo | None = None,
) -> RunSummary:
    """Write the missing records of ``indices`` x ``spec``'s settings to ``store``, in this process.

    Raises :class:`~dsmooth_core.progress.Cancelled` when ``progress`` asks to stop; records already
    written stay, and a rerun continues from them.
    """
    with store:  # one writer at a time; the store reads its keys again under the lock
        plan = plan_run(model, indices, profile, spec, store, dataset=dataset, split=split)
        units = spec.attack.n_queries
        tracker = _Tracker(
            progress, sum(units + sum(spec.n0 + job[0].n for job in jobs) for jobs in plan.todo.values() if jobs)
        )
        written = 0
        with checked_noises(model, plan.noises.values()):
            for idx, jobs in plan.todo.items():
                if not jobs:
                    continue
                x, label = images.tensor([idx])[0], int(images.labels[idx])
                records = image_records(
                    model, idx, x, label, jobs, plan.noises, profile, spec, batch_size, tracker, memo
                )
                for record in records:
                    store.append(record)
                    written += 1
        return RunSummary(images=len(plan.todo), images_skipped=plan.images_skipped, records_written=written)


@contextlib.contextmanager
def checked_noises(model: torch.nn.Module, noises: Iterable[SmoothingNoise]) -> Iterator[None]:
    """The model and every noise of a run checked once, so the certificates inside skip the repeat."""
    with contextlib.ExitStack() as stack:
        for noise in noises:
            stack.enter_context(certification_checks(model, noise, tuple(model.info.input_shape)))
        yield


def image_records(
    model: torch.nn.Module,
    idx: int,
    x: torch.Tensor,
    label: int,
    jobs: list[tuple[Setting, dict]],
    noises: dict[tuple, SmoothingNoise],
    profile: ThreatProfile,
    spec: ExperimentSpec,
    batch_size: int,
    tracker: _Tracker | None = None,
    memo: RunMemo | None = None,
) -> Iterator[Record]:
    """Attack image ``idx`` once, then yield one record per job as soon as its certificate exists.

    Every draw is seeded from (run seed, image, method), so the records are the same in any process;
    ``memo`` shares attacks and clean certificates with the process's other runs.
    """
    tracker = tracker or _Tracker(None, 0)
    memo = memo or RunMemo()
    forward = forward_name(model)
    units = spec.attack.n_queries
    attack_key = result_key(model.info, forward, idx, spec.attack, spec.seed)
    if attack_key not in memo.attacks:
        memo.attacks[attack_key] = _attack(model, idx, x, label, spec, tracker.part(units))
    image = memo.attacks[attack_key]
    tracker.advance(units)
    votes: dict[tuple, Certificate] = {}  # settings that differ in alpha only share their noise draws
    attacked_votes: dict[tuple, tuple[int, ...]] = {}  # the same at the attacked image
    for setting, planned in jobs:
        identity = _made_by(planned, forward)
        noise = noises[(setting.method, setting.sigma, setting.k)]
        draws = (setting.method, setting.sigma, setting.k, setting.n)
        clean_key = result_key(model.info, forward, noise, idx, spec.n0, setting.n, spec.seed, batch_size)
        if draws in votes:
            cert = at_level(votes[draws], noise, setting.alpha)
        elif clean_key in memo.certificates:
            cert = votes[draws] = at_level(memo.certificates[clean_key], noise, setting.alpha)
        else:
            generator = generator_for(model, derive_seed(spec.seed, image.idx, setting.method))
            part = tracker.part(spec.n0 + setting.n)
            cert = certify(model, image.x, noise, spec.n0, setting.n, setting.alpha, batch_size, generator, part)
            votes[draws] = memo.certificates[clean_key] = cert
        adversarial = _smoothed_at_attack(model, image, setting, noise, spec, batch_size, attacked_votes, tracker)
        record = {"key": record_key(identity), **identity, **_record(image, cert, noise, profile, adversarial)}
        yield {**record, "batch": batch_size, "forward": forward}
        tracker.advance(spec.n0 + setting.n)


def _made_by(identity: dict, forward: str) -> dict:
    """``identity`` naming the forward that runs here, not the planned one: on a Ray worker's GPU the
    ONNX wrapper becomes the torch model, and its records must say so (and be keyed so)."""
    return {**{k: v for k, v in identity.items() if k != "forward"}, **forward_identity(forward)}


def _missing(store: RecordStore, context: dict, settings: list[Setting], idx: int) -> list[tuple[Setting, dict]]:
    """The settings of image ``idx`` whose records are not in the store yet, with their identities."""
    jobs = []
    for setting in settings:
        identity = {**context, **setting.fields(), "idx": idx}
        if record_key(identity) not in store:
            jobs.append((setting, identity))
    return jobs


def _noises(settings: list[Setting], covariance: LowRankCovariance) -> dict[tuple, SmoothingNoise]:
    """One noise object per (method, sigma, k); DSmooth's ranks share the profile's directions."""
    ranked: dict[int, LowRankCovariance] = {}
    noises = {}
    for s in settings:
        cov = None
        if s.k is not None:
            cov = ranked.setdefault(s.k, covariance if s.k == covariance.k else covariance.with_rank(s.k))
        noises[(s.method, s.sigma, s.k)] = make_noise(s.method, s.sigma, cov)
    return noises


def _attack(
    model: torch.nn.Module,
    idx: int,
    x: torch.Tensor,
    label: int,
    spec: ExperimentSpec,
    progress: ProgressCallback | None,
) -> _Attacked:
    """Square + FGSM on one image, alone, so its result does not depend on the other images of the run."""
    device = model_device(model)
    result = square_then_fgsm(
        model,
        x.unsqueeze(0).to(device),
        torch.tensor([label], device=device),
        spec.attack,
        generator=generator_for(device, derive_seed(spec.seed, idx, "attack")),
        progress=progress,
    )
    return _Attacked(
        idx,
        x,
        label,
        result.perturbation[0].cpu(),
        result.adversarial[0].cpu(),
        bool(result.success[0]),
        int(result.clean_pred[0]) == label,
    )


def _smoothed_at_attack(
    model: torch.nn.Module,
    image: _Attacked,
    setting: Setting,
    noise: SmoothingNoise,
    spec: ExperimentSpec,
    batch_size: int,
    votes: dict[tuple, tuple[int, ...]],
    tracker: _Tracker,
) -> int | None:
    """PREDICT at the attacked image (ABSTAIN = -1), or None where the attack did not fool the base model.

    Its own seeded stream, so the answer is the same in any process or shard; its steps do not move the
    progress bar (the run's total is known before any attack), but a cancel request still stops them.
    """
    if not image.base_fooled:
        return None
    draws = (setting.method, setting.sigma, setting.k, setting.n)
    if draws not in votes:
        generator = generator_for(model, derive_seed(spec.seed, image.idx, f"{setting.method}:adversarial"))
        votes[draws] = predict_votes(model, image.adversarial, noise, setting.n, batch_size, generator, tracker.part(0))
    return predict_from_votes(votes[draws], setting.alpha)


def _record(
    image: _Attacked, cert: Certificate, noise: SmoothingNoise, profile: ThreatProfile, adversarial: int | None
) -> Record:
    """One certificate, where the image's attack perturbation lies relative to it, and the smoothed
    prediction at the attacked image (``adversarial``; None where the attack was not successful)."""
    # DSmooth's Mahalanobis size is in its own rank's metric; the other methods' records use the profile's
    covariance = getattr(noise, "covariance", profile.covariance)
    distances = perturbation_distances(image.perturbation, covariance)
    comparison = compare(cert, noise, image.perturbation, label=image.label)
    return {
        "label": image.label,
        "prediction": cert.prediction,
        "correct": cert.prediction == image.label,
        "p_lower": cert.p_lower,
        "radius": cert.radius,
        "metric": cert.metric,
        "radius_ceiling": cert.radius_ceiling,
        "l2_inscribed": comparison.l2_inscribed,
        "l1_radius": comparison.l1_inscribed,
        **{f"pert_{metric}": value for metric, value in distances.items()},
        "covered": comparison.certified,
        "attack_success": image.success,
        "clean_base_correct": image.clean_correct,
        "base_fooled": image.base_fooled,
        "adv_smoothed_prediction": adversarial,
        "seconds": cert.seconds,
    }
