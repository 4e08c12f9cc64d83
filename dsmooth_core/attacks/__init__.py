"""The threat DSmooth's covariance is fitted to: Square Attack, FGSM and their composition.

Models take [0, 1] pixels (B, C, H, W) and return logits. Attacks run batched on the model's device,
never modify their inputs, never leave ``.grad`` on parameters, and draw randomness only from the
``torch.Generator`` they are given.
"""

from dsmooth_core.attacks.compose import AttackResult, square_then_fgsm
from dsmooth_core.attacks.config import PRESETS, AttackConfig, FgsmVariant
from dsmooth_core.attacks.fgsm import fgsm_l2, fgsm_linf, fgsm_step_l2, fgsm_step_linf, input_gradient
from dsmooth_core.attacks.norms import perturbation_norms
from dsmooth_core.attacks.square import SquareResult, p_selection, square_attack, square_side

__all__ = [
    "PRESETS",
    "AttackConfig",
    "AttackResult",
    "FgsmVariant",
    "SquareResult",
    "fgsm_l2",
    "fgsm_linf",
    "fgsm_step_l2",
    "fgsm_step_linf",
    "input_gradient",
    "p_selection",
    "perturbation_norms",
    "square_attack",
    "square_side",
    "square_then_fgsm",
]
