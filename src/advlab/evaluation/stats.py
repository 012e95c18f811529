"""Confidence intervals for accuracies measured on a finite sample of test points."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054
"""Two-sided 97.5% quantile of the standard normal: the z of a 95% interval."""


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (default 95%).

    Better behaved than the normal ("Wald") interval near 0 and 1 — exactly where robust accuracies often
    sit — and never leaves [0, 1].

    Args:
        successes: number of positives (e.g. examples still classified correctly).
        n: number of trials; ``n = 0`` gives the uninformative interval ``(0, 1)``.
        z: standard-normal quantile (1.96 for 95%).

    Returns:
        ``(low, high)`` with ``0 <= low <= successes / n <= high <= 1``.

    References:
        Wilson, "Probable inference, the law of succession, and statistical inference", JASA 1927;
        Brown, Cai & DasGupta, "Interval Estimation for a Binomial Proportion", Statistical Science 2001.

    Examples:
        >>> low, high = wilson_interval(90, 100)
        >>> round(low, 4), round(high, 4)
        (0.8256, 0.9448)
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if successes <= 0 else max(0.0, center - half)  # exact ends: no float dust at 0 and 1
    high = 1.0 if successes >= n else min(1.0, center + half)
    return low, high
