"""The paper's multi-attack: Square Attack, then FGSM on its output (docs/MATH.md section 5).

FGSM is applied to every image, fooled by Square or not, as the paper composes the two.
``queries`` counts the attack's model queries per image: Square's (see ``square``) plus one for
the FGSM gradient when FGSM runs. The forward passes that report ``clean_pred`` and ``adv_pred`` are
the evaluation of the result, not part of the attack, and are not counted.

Chunking (``batch_size``) does not change Square's result: each image's randomness comes from its own
key, drawn for the whole batch before chunking. Only the FGSM gradient may differ in the last float
bits, as batched convolutions round differently for different batch sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dsmooth_core.attacks._checks import check_batch, check_count
from dsmooth_core.attacks._model import predict_labels
from dsmooth_core.attacks._streams import draw_keys
from dsmooth_core.attacks.config import AttackConfig
from dsmooth_core.attacks.fgsm import fgsm_l2, fgsm_linf, input_gradient
from dsmooth_core.attacks.norms import perturbation_norms
from dsmooth_core.attacks.square import square_attack_keyed
from dsmooth_core.attacks.support import Support
from dsmooth_core.contract import check_generator, check_pixels, model_contract
from dsmooth_core.progress import ProgressCallback, report

_FGSM = {"l2": fgsm_l2, "linf": fgsm_linf}


@dataclass(frozen=True)
class AttackResult:
    """Images (B, C, H, W) before and after the attack, and per-image (B,) facts about it."""

    clean: torch.Tensor
    adversarial: torch.Tensor
    perturbation: torch.Tensor  # adversarial - clean
    labels: torch.Tensor
    success: torch.Tensor  # adv_pred != labels
    queries: torch.Tensor  # Square queries + 1 when FGSM ran
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    l1: torch.Tensor


def square_then_fgsm(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: AttackConfig,
    *,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
    batch_size: int | None = None,
) -> AttackResult:
    """Attack images ``x`` in [0, 1] with labels ``y``, ``batch_size`` images at a time (all if None).

    ``progress`` counts Square iterations plus one step per finished chunk, over all chunks.
    Tensors come back on ``x``'s device.
    """
    check_pixels(x, batched=True)
    check_batch(x, y)
    check_generator(generator)
    count = x.shape[0]
    size = count if batch_size is None else check_count("batch_size", batch_size)
    keys = draw_keys(generator, count)
    starts = range(0, count, size)
    steps_per_chunk = max(config.n_queries - 2, 0) + 1
    total = len(starts) * steps_per_chunk
    chunks = []
    with model_contract(model, tuple(x.shape[1:]), x) as classes:
        if y.dtype.is_floating_point or y.dtype == torch.bool or int(y.min()) < 0 or int(y.max()) >= classes:
            raise ValueError(f"y must hold integer labels in [0, {classes}), the model's classes")
        for index, start in enumerate(starts):
            part = slice(start, start + size)
            offset = index * steps_per_chunk
            progress_part = _shifted(progress, offset, total)
            chunks.append(_attack_chunk(model, x[part], y[part], keys[part], config, progress_part))
            report(progress, offset + steps_per_chunk, total)
    adversarial, queries, clean_pred, adv_pred = (torch.cat(column) for column in zip(*chunks, strict=True))
    clean, labels = x.detach().clone(), y.detach().to(x.device).clone()
    perturbation = adversarial - clean
    return AttackResult(
        clean=clean,
        adversarial=adversarial,
        perturbation=perturbation,
        labels=labels,
        success=adv_pred != labels,
        queries=queries,
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        **perturbation_norms(perturbation),
    )


def _attack_chunk(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    keys: torch.Tensor,
    config: AttackConfig,
    progress: ProgressCallback | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adversarial images, queries, clean and adversarial predictions of one chunk."""
    square = square_attack_keyed(
        model,
        x,
        y,
        keys,
        eps=config.eps_inf,
        n_queries=config.n_queries,
        p_init=config.p_init,
        progress=progress,
        support=config.support,
    )
    adversarial, queries = square.adversarial, square.queries
    if config.fgsm is not None:
        adversarial = _fgsm(model, adversarial, y, config)
        queries = queries + 1
    if config.project_linf:
        adversarial = _project_linf(adversarial, x, config.eps_inf, config.support)
    return adversarial, queries, predict_labels(model, x), predict_labels(model, adversarial)


def _fgsm(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, config: AttackConfig) -> torch.Tensor:
    """The FGSM step, along the part of the gradient the threat's support can follow."""
    if config.support.whole_image:
        return _FGSM[config.fgsm](model, x, y, config.eps_fgsm)
    direction = config.support.direction(input_gradient(model, x, y)).to(x.device)
    if config.fgsm == "linf":
        step = config.eps_fgsm * direction.sign()
    else:
        flat = direction.flatten(1)
        tiny = torch.finfo(flat.dtype).tiny
        scaled = flat / flat.abs().amax(dim=1, keepdim=True).clamp_min(tiny)  # see fgsm_step_l2: no underflow
        step = (config.eps_fgsm * scaled / scaled.norm(dim=1, keepdim=True).clamp_min(tiny)).view_as(x)
    return (x.detach() + step).clamp(0, 1)


def _project_linf(adversarial: torch.Tensor, clean: torch.Tensor, eps: float, support: Support) -> torch.Tensor:
    """Nearest point of the l_inf ball of radius ``eps`` (times the support's per-pixel weight) around
    ``clean``, clipped to [0, 1]; outside a window's support the image is the clean one."""
    bound = eps if support.whole_image else eps * support.weights(*clean.shape[2:], clean)
    return torch.minimum(torch.maximum(adversarial, clean - bound), clean + bound).clamp(0, 1)


def _shifted(progress: ProgressCallback | None, offset: int, total: int) -> ProgressCallback | None:
    """A chunk's progress, reported as a position in the whole run."""
    if progress is None:
        return None

    def shifted(done: int, _chunk_total: int) -> bool | None:
        return progress(offset + done, total)

    return shifted
