"""Square Attack, l_inf, untargeted (Andriushchenko et al. 2020; docs/MATH.md section 5).

A score-based random search: start from vertical stripes of +-eps, then repeatedly overwrite one
random square of the perturbation with a fresh +-eps per channel and keep it only if the margin loss
drops. Query accounting: every forward pass of an image counts, and no image exceeds ``n_queries``:

* query 1 is the clean image; an image already misclassified there stops, unchanged;
* query 2 is the stripes initialization (kept unconditionally, as in the reference);
* each further iteration costs one query per image still correctly classified, for at most
  ``n_queries - 2`` iterations. An image stops as soon as its margin is negative.

So an image that is not misclassified from the start uses at least 2 queries (when ``n_queries >= 2``)
and an image never fooled uses exactly ``n_queries``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

import torch

from dsmooth_core.attacks._checks import check_batch, check_count, check_p_init, check_positive
from dsmooth_core.attacks._model import checked_logits, margin_loss
from dsmooth_core.attacks._streams import below, draw_keys, random_words, signs
from dsmooth_core.attacks.support import WHOLE_IMAGE, Support
from dsmooth_core.contract import check_generator, check_pixels, model_contract
from dsmooth_core.device import model_device
from dsmooth_core.progress import ProgressCallback, report

# Iterations (on the reference's 10000-query scale) after which p is halved once more.
_HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
# Fresh sign draws tried when a proposal would leave the image unchanged (the reference redraws until
# something changes; the bound keeps inputs outside [0, 1] from looping forever).
_MAX_DRAWS = 8


@dataclass(frozen=True)
class SquareResult:
    """Square Attack output: images (B, C, H, W), queries used (B,) int64, fooled (B,) bool."""

    adversarial: torch.Tensor
    queries: torch.Tensor
    success: torch.Tensor


def p_selection(p_init: float, iteration: int, n_queries: int) -> float:
    """The published piecewise-constant schedule of p, rescaled from a 10000-query budget.

    Past the last halving point p stays at ``p_init / 512`` (the reference would jump back to
    ``p_init`` beyond its budget, which its loop never reaches).
    """
    scaled = int(iteration / n_queries * 10000)
    return p_init / 2 ** bisect_left(_HALVING_POINTS, scaled)


def square_side(p: float, height: int, width: int) -> int:
    """Side of the square that covers a fraction ``p`` of the pixels: at least 1, below the image size."""
    side = round(math.sqrt(p * height * width))
    return max(min(side, min(height, width) - 1), 1)


def square_attack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    n_queries: int,
    p_init: float = 0.05,
    generator: torch.Generator,
    progress: ProgressCallback | None = None,
    support: Support = WHOLE_IMAGE,
) -> SquareResult:
    """Attack images ``x`` in [0, 1] with true labels ``y`` inside the l_inf ball of radius ``eps``
    (per pixel ``eps`` times the ``support``'s weight; squares are drawn in its searched grid).

    Runs on the model's device and returns tensors on ``x``'s device. All randomness comes from
    ``generator`` (one key per image, see ``_streams``). ``progress`` gets (iteration, iterations)
    once per iteration, and (iterations, iterations) when every image stops early.
    """
    check_pixels(x, batched=True)
    check_batch(x, y)
    keys = draw_keys(check_generator(generator), x.shape[0])
    with model_contract(model, tuple(x.shape[1:]), x):
        return square_attack_keyed(
            model,
            x,
            y,
            keys,
            eps=check_positive("eps", eps),
            n_queries=check_count("n_queries", n_queries),
            p_init=check_p_init(p_init),
            progress=progress,
            support=support,
        )


def square_attack_keyed(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    keys: torch.Tensor,
    *,
    eps: float,
    n_queries: int,
    p_init: float,
    progress: ProgressCallback | None,
    support: Support = WHOLE_IMAGE,
) -> SquareResult:
    """``square_attack`` with the per-image keys given, so a chunk of a batch replays exactly.

    The search state is ``delta``, in the support's searched grid; an image is always
    ``clip(clean + embed(delta), 0, 1)``, which for the whole image is the published algorithm.
    """
    device = model_device(model)
    clean, labels, keys = x.detach().to(device), y.to(device), keys.to(device)
    channels, rows, cols = support.z_shape(*clean.shape[1:])
    iterations = max(n_queries - 2, 0)
    with torch.no_grad():
        best = clean.clone()
        delta = clean.new_zeros(clean.shape[0], channels, rows, cols)
        margin = margin_loss(checked_logits(model, clean), labels)
        queries = torch.ones(clean.shape[0], dtype=torch.long, device=device)
        active = _not_fooled(margin)
        if n_queries >= 2 and active.numel():
            delta[active] = _stripes(keys[active], eps, delta[active])
            best[active] = _image(clean[active], delta[active], support)
            margin[active] = margin_loss(checked_logits(model, best[active]), labels[active])
            queries[active] += 1
        for iteration in range(iterations):
            active = _not_fooled(margin)
            if not active.numel():
                report(progress, iterations, iterations)
                break
            side = square_side(p_selection(p_init, iteration, n_queries), rows, cols)
            step = _propose(clean[active], best[active], delta[active], keys[active], iteration, side, eps, support)
            candidate, candidate_delta = step
            candidate_margin = margin_loss(checked_logits(model, candidate), labels[active])
            queries[active] += 1
            improved = candidate_margin < margin[active]
            best[active[improved]] = candidate[improved]
            delta[active[improved]] = candidate_delta[improved]
            margin[active[improved]] = candidate_margin[improved]
            report(progress, iteration + 1, iterations)
    return SquareResult(best.to(x.device), queries.to(x.device), (margin < 0).to(x.device))


def _not_fooled(margin: torch.Tensor) -> torch.Tensor:
    """Indices of images still classified correctly (a tie, margin 0, is not yet a success)."""
    return (margin >= 0).nonzero().squeeze(1)


def _image(clean: torch.Tensor, delta: torch.Tensor, support: Support) -> torch.Tensor:
    """The attacked image of a searched perturbation, clipped to [0, 1]."""
    return (clean + support.embed(delta, *clean.shape[2:])).clamp(0, 1)


def _stripes(keys: torch.Tensor, eps: float, like: torch.Tensor) -> torch.Tensor:
    """Vertical stripes: one random sign per image, channel and column of the searched grid, times eps."""
    batch, channels, rows, cols = like.shape
    stripe = signs(random_words(keys, 0, channels * cols), like.dtype).view(batch, channels, 1, cols)
    return (eps * stripe).expand(batch, channels, rows, cols).clone()


def _propose(
    clean: torch.Tensor,
    best: torch.Tensor,
    delta: torch.Tensor,
    keys: torch.Tensor,
    iteration: int,
    side: int,
    eps: float,
    support: Support,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Overwrite one random square of each image's ``delta`` with +-eps per channel (redrawn if the image
    would not change); the candidate images and their ``delta``."""
    batch, channels, rows, cols = delta.shape
    words = random_words(keys, iteration + 1, 2 + _MAX_DRAWS * channels)
    top = below(words[:, 0], rows - side + 1)[:, None]
    left = below(words[:, 1], cols - side + 1)[:, None]
    row = torch.arange(rows, device=delta.device)[None, :]
    col = torch.arange(cols, device=delta.device)[None, :]
    in_rows = (row >= top) & (row < top + side)
    in_cols = (col >= left) & (col < left + side)
    inside = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]
    draws = signs(words[:, 2:], delta.dtype).view(batch, _MAX_DRAWS, channels, 1, 1)
    proposal, proposal_delta = best, delta
    unchanged = torch.ones(batch, dtype=torch.bool, device=delta.device)
    for draw in range(_MAX_DRAWS):
        candidate_delta = torch.where(inside, eps * draws[:, draw], delta)
        candidate = _image(clean, candidate_delta, support)
        keep = unchanged[:, None, None, None]
        proposal = torch.where(keep, candidate, proposal)
        proposal_delta = torch.where(keep, candidate_delta, proposal_delta)
        unchanged &= (candidate == best).flatten(1).all(dim=1)
        if not unchanged.any():
            break
    return proposal, proposal_delta
