"""Interval and test statistics for success rates, delegated to scipy.

Why these two:
- Wilson score interval (Wilson 1927) for a binomial proportion: unlike the normal ("Wald") interval it
  stays inside [0, 1] and keeps close to its nominal coverage at the small n (50 episodes) and rates near
  0 or 1 that policy evaluations live at. scipy computes it (``BinomTestResult.proportion_ci``).
- Exact McNemar test for paired binary outcomes (McNemar 1947): when two settings (two flow-step counts,
  or two checkpoints) run on the same episode keys, only the discordant pairs carry information, and under
  H0 each discordant pair goes either way with probability 1/2. The exact version is a two-sided binomial
  test on the discordant counts, valid at the small counts we see (the chi-square version is not).

scipy is imported inside the functions so that importing the reports package stays cheap.
"""
from __future__ import annotations

import math


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` Bernoulli trials.

    Returns ``(low, high)``; ``(nan, nan)`` when ``n == 0`` (no valid episodes: no information).
    Example: 8 of 10 -> (0.490, 0.943).
    """
    successes, n = int(successes), int(n)
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"wilson_interval: need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"wilson_interval: confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest  # lazy: keeps `vla-flow --help` fast

    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def mcnemar_exact(b01: int, b10: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts.

    ``b01``: pairs where the first setting failed and the second succeeded; ``b10``: the reverse.
    Concordant pairs do not enter the test. With no discordant pairs there is no evidence of a
    difference and the p-value is 1.0.
    """
    b01, b10 = int(b01), int(b10)
    if b01 < 0 or b10 < 0:
        raise ValueError(f"mcnemar_exact: discordant counts must be >= 0, got b01={b01}, b10={b10}")
    if b01 + b10 == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(b01, b01 + b10, p=0.5, alternative="two-sided").pvalue)
