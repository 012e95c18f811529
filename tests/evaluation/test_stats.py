"""Wilson score interval against hand-computed values."""

from __future__ import annotations

import math

import pytest

from advlab.evaluation import wilson_interval


def test_wilson_hand_computed():
    # 90/100, z = 1.96: centre (0.9 + 1.96²/200) / (1 + 1.96²/100) = 0.88521,
    # half-width 1.96/(1.038415) * sqrt(0.9*0.1/100 + 1.96²/40000) = 0.05958 -> [0.82563, 0.94477]
    lo, hi = wilson_interval(90, 100)
    assert lo == pytest.approx(0.82563, abs=1e-5)
    assert hi == pytest.approx(0.94477, abs=1e-5)


def test_wilson_zero_successes_closed_form():
    # k = 0: the interval is [0, z² / (n + z²)]
    z = 1.959963984540054
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(z * z / (10 + z * z), rel=1e-12)
    lo, hi = wilson_interval(10, 10)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(10 / (10 + z * z), rel=1e-12)


def test_wilson_contains_estimate_and_shrinks():
    for n in (5, 50, 500):
        for k in (0, 1, n // 3, n):
            lo, hi = wilson_interval(k, n)
            assert 0.0 <= lo <= k / n <= hi <= 1.0
    assert (lambda a, b: a[1] - a[0] > b[1] - b[0])(wilson_interval(30, 100), wilson_interval(300, 1000))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert not math.isnan(wilson_interval(1, 1)[0])
