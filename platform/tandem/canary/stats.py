"""The significance tests the canary controller and ``bench.canary`` use (no SciPy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def _log_binom_pmf(k: int, n: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2)


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: the p-value of ``wins`` vs ``losses`` under "no preference"
    (ties are left out before calling). 1.0 when there is no evidence."""
    if wins < 0 or losses < 0:
        raise ValueError("`wins` and `losses` must be >= 0")
    n = wins + losses
    if n == 0:
        return 1.0
    tail = min(wins, losses)
    p = sum(math.exp(_log_binom_pmf(i, n)) for i in range(tail + 1))
    return min(1.0, 2 * p)


def _normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def two_proportion_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """Pooled two-proportion z-test of ``x2/n2`` against ``x1/n1``: ``(z, two-sided p)``; ``z``
    is positive when the second proportion is higher. ``(0, 1)`` without data."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (x2 / n2 - x1 / n1) / se
    return z, min(1.0, 2 * _normal_sf(abs(z)))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]
