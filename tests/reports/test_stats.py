"""Wilson interval and exact McNemar test against hand-computed and published values."""
import math

import pytest
from scipy.stats import binomtest

from reports.stats import mcnemar_exact, wilson_interval

Z = 1.959963984540054  # two-sided 95% normal quantile


def wilson_by_hand(k: int, n: int) -> tuple[float, float]:
    """Wilson (1927) score interval written out: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)."""
    p = k / n
    centre = p + Z * Z / (2 * n)
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return (centre - half) / (1 + Z * Z / n), (centre + half) / (1 + Z * Z / n)


def test_wilson_published_value_8_of_10():
    # statsmodels proportion_confint(8, 10, method="wilson") -> (0.4902, 0.9433)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.49016, abs=1e-4)
    assert high == pytest.approx(0.94332, abs=1e-4)


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (1, 50), (40, 50), (25, 50), (3, 7)])
def test_wilson_matches_formula(k, n):
    assert wilson_interval(k, n) == pytest.approx(wilson_by_hand(k, n), abs=1e-9)


def test_wilson_edges():
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    assert wilson_interval(0, 10)[1] == pytest.approx(Z * Z / (10 + Z * Z), abs=1e-9)  # 0.2775
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(11, 10)


@pytest.mark.parametrize("b01,b10,expected", [
    (1, 9, 2 * 11 / 1024),   # 2 * P(X <= 1), X ~ Bin(10, 1/2)
    (0, 5, 2 / 32),          # 2 * (1/2)^5
    (5, 5, 1.0),
    (0, 0, 1.0),             # no discordant pairs: no evidence
    (12, 3, 2 * sum(math.comb(15, i) for i in range(4)) / 2 ** 15),
])
def test_mcnemar_exact_hand_values(b01, b10, expected):
    assert mcnemar_exact(b01, b10) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(b10, b01) == pytest.approx(expected, rel=1e-12)  # symmetric


def test_mcnemar_matches_scipy_binomtest():
    for b01, b10 in [(3, 11), (7, 2), (20, 31)]:
        assert mcnemar_exact(b01, b10) == pytest.approx(binomtest(b01, b01 + b10, 0.5).pvalue)
