"""The few things an attack asks of a classifier: its loss on logits and its predicted labels."""

from __future__ import annotations

import torch

from dsmooth_core.device import model_device


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logit of the true class minus the largest other logit: negative exactly when misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return true - others.amax(dim=1)


def predict_labels(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Arg-max labels, computed on the model's device and returned on ``x``'s device."""
    with torch.no_grad():
        return model(x.to(model_device(model))).argmax(dim=1).to(x.device)
