"""Hand-made certificates with chosen prediction and radius, for tests of what is read off them."""

from __future__ import annotations

from dsmooth_core import ABSTAIN, Certificate, SmoothingNoise


def certificate(noise: SmoothingNoise, prediction: int, radius: float, *, classes: int = 3) -> Certificate:
    """A certificate of ``noise``'s method: ``prediction`` (or ABSTAIN) with ``radius`` in its metric."""
    selected = 1 if prediction == ABSTAIN else prediction
    selection = [0] * classes
    selection[selected] = 10
    estimation = [5] * classes
    estimation[selected] = 45 if prediction != ABSTAIN else 25
    estimation[(selected + 1) % classes] = 20 if prediction == ABSTAIN else 5
    return Certificate(
        prediction=prediction,
        radius=radius,
        metric=noise.metric,
        method=noise.key,
        p_lower=0.8 if prediction != ABSTAIN else 0.4,
        counts_selection=tuple(selection),
        counts_estimation=tuple(estimation),
        n0=sum(selection),
        n=sum(estimation),
        alpha=0.001,
        radius_ceiling=0.5,
        seconds=0.1,
    )
