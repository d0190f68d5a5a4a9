"""tracekit.sweep.stats against values computed by hand (Student's t quantiles from a printed table)."""

from __future__ import annotations

import pytest

from tracekit.sweep.stats import spread, t_quantile


def test_three_values():
    # 1, 2, 3: mean 2; squared deviations 1 + 0 + 1 = 2, over n - 1 = 2: variance 1, sd 1.
    # t(0.975, 2 degrees of freedom) = 4.302653 (tables: 4.303); half width 4.302653 * 1 / sqrt(3) = 2.484138.
    s = spread([1, 2, 3])
    assert (s.n, s.mean, s.sd, s.min, s.max) == (3, 2.0, 1.0, 1.0, 3.0)
    assert s.ci95_low == pytest.approx(2 - 2.484138, abs=1e-6)
    assert s.ci95_high == pytest.approx(2 + 2.484138, abs=1e-6)
    assert s.ci95_half == pytest.approx(2.484138, abs=1e-6)


def test_eight_values():
    # 2, 4, 4, 4, 5, 5, 7, 9: mean 40 / 8 = 5; squared deviations 9+1+1+1+0+0+4+16 = 32, / 7 = 4.571429,
    # sd = 2.138090; t(0.975, 7) = 2.364624 (tables: 2.365); half = 2.364624 * 2.138090 / 2.828427 = 1.787488.
    s = spread([2, 4, 4, 4, 5, 5, 7, 9])
    assert s.mean == 5.0
    assert s.sd == pytest.approx(2.138090, abs=1e-6)
    assert (s.ci95_low, s.ci95_high) == (pytest.approx(3.212512, abs=1e-6), pytest.approx(6.787488, abs=1e-6))


def test_two_values_and_the_t_quantiles():
    # 10, 12: mean 11, sd sqrt(2) = 1.414214; t(0.975, 1) = 12.706205; half = 12.706205 * 1.414214 / sqrt(2).
    s = spread([10, 12])
    assert s.sd == pytest.approx(1.414214, abs=1e-6)
    assert (s.ci95_low, s.ci95_high) == (pytest.approx(11 - 12.706205, abs=1e-6), pytest.approx(11 + 12.706205, abs=1e-6))
    assert t_quantile(2) == pytest.approx(12.706205, abs=1e-6)
    assert t_quantile(31) == pytest.approx(2.042272, abs=1e-6)  # 30 degrees of freedom (tables: 2.042)


def test_one_value_has_no_spread_and_none_is_not_a_value():
    s = spread([None, 4.5, None])
    assert (s.n, s.mean, s.min, s.max) == (1, 4.5, 4.5, 4.5)
    assert s.sd is None and s.ci95_low is None and s.ci95_high is None and s.ci95_half is None  # unknown, not 0


def test_no_value():
    s = spread([])
    assert s.n == 0 and s.mean is None and s.sd is None and s.min is None
