"""The app's job submissions, one per kind: the full pages and the guided lesson both start their jobs here.

Why one place: a lesson step's result is then the full page's result (the same task, the same result
key, so the cache hands it over when the student opens the page with the same settings), and the
records it delivers are the ones the full pages show. Nothing here computes: each function builds the
inputs and hands a :mod:`dsmooth_lab_ui.tasks` function to :func:`dsmooth_lab_ui.jobs.start`.
"""

from __future__ import annotations

import functools

import torch

from dsmooth_core import SmoothingNoise
from dsmooth_core.attacks import AttackConfig
from dsmooth_core.audit import AuditResult, AuditSettings
from dsmooth_core.seeds import derive_seed
from dsmooth_core.settings import CertifySettings, engine_part, result_key
from dsmooth_lab_ui import attack_outcome_view, audit_view, forward, jobs, resources, state, tasks, widgets
from dsmooth_lab_ui.lesson_defaults import LessonSettings

# The audit's search, kept small so it answers in seconds; the Certify page offers the full one.
AUDIT = AuditSettings(n=200, alpha=0.001, draws=8, steps=5, bisection_steps=3, batch_size=100)


def attack(model: torch.nn.Module, image: state.ImageChoice, config: AttackConfig, seed: int) -> None:
    """Square + FGSM on the image; delivers ``state.ATTACK`` (the Attack page's record).

    Square's queries are gradient-free, so they run on the certify jobs' forward (ONNX Runtime answers a
    one-image query about 4x faster than eager torch on the CPU); FGSM's gradient still comes from torch.
    The result is keyed by that forward: a near-tie of the two engines' logits can steer Square elsewhere.
    """
    fast = forward.prepared(model)
    x = resources.model_input(model, image)
    label = resources.effective_label(model, image)
    is_prediction = label is None
    if label is None:
        label = int(resources.probabilities(model, image, x).argmax())
    key = resources.model_key(model)
    items = widgets.config_items(config)

    def deliver(result) -> None:
        state.put(
            state.ATTACK,
            state.AttackRecord(key, image.image_id, label, is_prediction, dict(items), seed, result, fast.name),
        )

    jobs.start(
        "attack",
        "The attack",
        result_key(model.info, image.identity, label, config, seed, *engine_part(fast.name)),
        functools.partial(tasks.attack, fast.model, x, label, config, seed),
        deliver,
        batch=1,
    )


def votes(
    model: torch.nn.Module,
    image: state.ImageChoice,
    noises: list[SmoothingNoise],
    sigma: float,
    count: int,
    batch: int,
    seed: int,
) -> None:
    """The base model's votes under each noise; delivers ``state.NOISE_VOTES`` (the Noise explorer's record)."""
    x = resources.model_input(model, image)
    runs = [(noise, result_key("votes", model.info, image.identity, noise, count, seed, batch)) for noise in noises]
    record = {"model_key": resources.model_key(model), "image_id": image.image_id, "sigma": sigma, "count": count}
    jobs.start(
        "votes",
        "Counting votes",
        tuple(cache_key for _, cache_key in runs),
        functools.partial(tasks.votes, model, x, runs, count, batch, seed),
        lambda results: state.put(state.NOISE_VOTES, {**record, "results": results}),
        batch=min(batch, count),
        kept=jobs.METHODS_KEPT,
    )


def certify_settings(methods: list[str], s: LessonSettings) -> list[CertifySettings]:
    return [CertifySettings(method, s.sigma, s.n0, s.n, s.alpha, s.batch, s.seed) for method in methods]


def certify(
    model: torch.nn.Module,
    image: state.ImageChoice,
    runs: list[tuple[CertifySettings, SmoothingNoise]],
    profile: state.ProfileChoice | None,
) -> None:
    """DCERT per method; each certificate is cached under the identity of all its inputs (``state.CERTIFY``),
    the forward's engine included (the two engines may differ by a few near-tie votes)."""
    x = resources.model_input(model, image)
    fast = forward.prepared(model)
    engine = engine_part(fast.name)
    keys = [result_key("certificate", model.info, image.identity, noise, s, *engine) for s, noise in runs]
    shaped = profile is not None and any(noise.needs_profile for _, noise in runs)
    label = resources.effective_label(model, image)

    attack = attack_outcome_view.successful_attack(resources.model_key(model), image.image_id, label)

    def deliver(results: list, predictions: dict[str, int] | None = None) -> None:
        record = state.CertifyRecord(
            model_key=resources.model_key(model),
            model_name=model.info.name,
            image_id=image.image_id,
            settings={s.method: s for s, _ in runs},
            label=label,
            profile=profile.describe() if shaped else None,
            profile_hash=profile.content_hash[:16] if shaped else None,
            attacked=None if predictions is None else state.AttackedPredictions(attack, predictions),
            forward=fast.name,
        )
        record.results.extend(results)
        state.put(state.CERTIFY, record)

    s = runs[0][0]
    keyed = [(noise, key) for (_, noise), key in zip(runs, keys, strict=True)]
    work = functools.partial(tasks.certificates, fast.model, x, keyed, s.n0, s.n, s.alpha, s.batch, s.seed)
    job_key: tuple = tuple(keys)
    if attack is not None:  # the same job also asks the smoothed classifier at the attacked image
        attacked = (attack.result.adversarial[0], attack_outcome_view.attack_key(attack))
        work = functools.partial(
            tasks.certificates_under_attack, fast.model, x, keyed, s.n0, s.n, s.alpha, s.batch, s.seed, attacked
        )
        job_key = (*keys, attacked[1])
    jobs.start(
        "certify",
        "Certification",
        job_key,
        work,
        deliver if attack is None else (lambda out: deliver(*out)),
        batch=min(s.batch, s.n),
        kept=jobs.METHODS_KEPT,
    )


def run_audit(model: torch.nn.Module, x: torch.Tensor, record: state.CertifyRecord, noise: SmoothingNoise) -> None:
    """The audit of one certificate with :data:`AUDIT`; delivers into ``state.AUDIT`` as the Certify
    page's audit panel does (the same task, seed rule and key)."""
    certificate = dict(record.results)[noise]
    seed = derive_seed(record.settings[noise.key].seed, 0, "audit")  # the audit panel's rule
    method = noise.name

    def deliver(result: AuditResult) -> None:
        audits = dict(state.get(state.AUDIT) or {})
        audits[method] = audit_view.AuditView(record.model_key, record.image_id, certificate, result)
        state.put(state.AUDIT, audits)

    jobs.start(
        "audit",
        f"Audit of {method}",
        result_key(record.model_key, record.image_id, noise, certificate, AUDIT, seed),
        functools.partial(tasks.audit, model, x, noise, certificate, AUDIT, seed),
        deliver,
        batch=AUDIT.batch_size,
    )
