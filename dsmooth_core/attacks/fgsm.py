"""One-step gradient attacks: FGSM in its l2 form (the paper's) and its l_inf sign form.

The gradient is taken w.r.t. the input only (``torch.autograd.grad``), so model parameters never
receive a ``.grad`` and frozen models work. One forward pass per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsmooth_core.attacks._checks import check_batch, check_positive
from dsmooth_core.attacks._model import checked_logits
from dsmooth_core.device import model_device


def input_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the cross-entropy at the true labels w.r.t. ``x`` (on the model's device).

    The loss is summed, not averaged, so an image's gradient does not shrink with the batch size.
    A model whose output ignores the input yields a zero gradient; non-finite logits are refused.
    """
    check_batch(x, y)
    device = model_device(model)
    inputs = x.detach().to(device).requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(checked_logits(model, inputs), y.to(device), reduction="sum")
        (grad,) = torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True)
    return grad


def fgsm_step_l2(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps2: float) -> torch.Tensor:
    """The unclipped step ``eps2 * g / ||g||_2`` per image; zero where the gradient is zero."""
    eps2 = check_positive("eps2", eps2)
    flat = input_gradient(model, x, y).flatten(1)
    # Divide by the largest entry first: a confident model's gradient can be so small (1e-22) that
    # its squares underflow and the norm alone would come out 0 or inexact.
    # A zero gradient stays zero: 0 / tiny is 0.
    tiny = torch.finfo(flat.dtype).tiny
    scaled = flat / flat.abs().amax(dim=1, keepdim=True).clamp_min(tiny)
    unit = scaled / scaled.norm(dim=1, keepdim=True).clamp_min(tiny)
    return (eps2 * unit).view_as(x).to(x.device)


def fgsm_step_linf(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The unclipped step ``eps * sign(g)``; zero for entries whose gradient is zero."""
    eps = check_positive("eps", eps)
    return (eps * input_gradient(model, x, y).sign()).to(x.device)


def fgsm_l2(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps2: float) -> torch.Tensor:
    """Fast gradient method, l2: ``clip(x + eps2 * g / ||g||_2, 0, 1)``."""
    return (x.detach() + fgsm_step_l2(model, x, y, eps2)).clamp(0, 1)


def fgsm_linf(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM, l_inf: ``clip(x + eps * sign(g), 0, 1)``."""
    return (x.detach() + fgsm_step_linf(model, x, y, eps)).clamp(0, 1)
