"""The few things an attack asks of a classifier: finite logits, its loss on them and its predicted labels."""

from __future__ import annotations

import torch

from dsmooth_core.contract import check_finite_logits
from dsmooth_core.device import model_device


def checked_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, refused when any logit is NaN or infinite: a NaN margin compares false with
    everything, so an attack would keep the image "not fooled" without a word."""
    logits = model(x)
    check_finite_logits(model, logits)
    return logits


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logit of the true class minus the largest other logit: negative exactly when misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.amax(dim=1)


def predict_labels(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Arg-max labels, computed on the model's device and returned on ``x``'s device."""
    with torch.no_grad():
        return checked_logits(model, x.to(model_device(model))).argmax(dim=1).to(x.device)
