"""The two statistical tests of Cohen's CERTIFY and PREDICT, delegated to scipy."""

from __future__ import annotations

from scipy.stats import beta, binomtest


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion.

    Equals Cohen's ``proportion_confint(nA, n, alpha=2 * alpha, method="beta")[0]``.
    """
    if not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")
    if successes == 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def top_two_significant(count_a: int, count_b: int, alpha: float) -> bool:
    """Two-sided binomial test that the top class beats the runner-up at level alpha."""
    total = count_a + count_b
    if total == 0:
        return False
    return binomtest(count_a, total, p=0.5).pvalue <= alpha
