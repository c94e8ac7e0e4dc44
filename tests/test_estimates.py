"""Means and differences with n and a 95% t interval: exact values checked against closed forms by hand."""

from __future__ import annotations

import math

import pytest

from pv_harness.estimates import difference_interval, mean_interval, t_quantile


def t975_closed_form(df: int) -> float:
    """Student's t 0.975 quantile where it has a closed form (df 1, 2 and 4)."""
    p = 0.975
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    alpha = 4 * p * (1 - p)
    return 2 * math.sqrt(math.cos(math.acos(math.sqrt(alpha)) / 3) / math.sqrt(alpha) - 1)


@pytest.mark.parametrize("df", [1, 2, 4])
def test_t_quantile_matches_the_closed_forms(df: int) -> None:
    assert t_quantile(0.975, df) == pytest.approx(t975_closed_form(df), rel=1e-13)
    assert t_quantile(0.025, df) == -t_quantile(0.975, df)


@pytest.mark.parametrize(("df", "expected"), [
    # the density integrated numerically at 30 digits (mpmath), and the printed tables' 2.228, 2.042, 1.984
    (10, 2.22813885198627471), (30, 2.04227245630123828), (100, 1.98397151852355226), (4.5, 2.65891234720440372),
])
def test_t_quantile_elsewhere(df: float, expected: float) -> None:
    assert t_quantile(0.975, df) == pytest.approx(expected, rel=1e-12)


def test_t_quantile_tends_to_the_normal_one() -> None:
    assert t_quantile(0.975, 1e7) == pytest.approx(1.959963984540054, abs=1e-6)


def test_t_quantile_refuses_impossible_arguments() -> None:
    with pytest.raises(ValueError, match="0 < p < 1 and df > 0"):
        t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="df > 0"):
        t_quantile(0.975, 0)


def test_mean_interval_by_hand() -> None:
    estimate = mean_interval([1, 2, 3, 4, 5])  # mean 3, sd sqrt(2.5), df 4
    half = t975_closed_form(4) * math.sqrt(2.5) / math.sqrt(5)
    assert (estimate.value, estimate.n, estimate.method) == (3.0, 5, "t")
    assert estimate.low == pytest.approx(3 - half, rel=1e-12)
    assert estimate.high == pytest.approx(3 + half, rel=1e-12)
    two = mean_interval([2.0, 4.0])  # sd sqrt(2) over sqrt(2): the half-width is the df-1 quantile itself
    assert two.low == pytest.approx(3 - math.tan(0.475 * math.pi), rel=1e-12)
    assert two.high == pytest.approx(3 + math.tan(0.475 * math.pi), rel=1e-12)


def test_mean_interval_leaves_missing_values_out() -> None:
    assert mean_interval([2.0, None, math.nan, 4.0]) == mean_interval([2.0, 4.0])
    one = mean_interval([7.0, math.nan])
    assert (one.value, one.low, one.high, one.n) == (7.0, None, None, 1)  # no interval under two values
    assert "no interval" in str(one) and "n = 1" in str(one)
    empty = mean_interval([None, math.nan])
    assert (empty.value, empty.n) == (None, 0)


def test_difference_interval_is_welch_by_hand() -> None:
    estimate = difference_interval([1, 3], [4, 6])  # variances 2 and 2, each over 2: se^2 = 2, df = 4 / 2 = 2
    half = t975_closed_form(2) * math.sqrt(2)
    assert (estimate.value, estimate.n, estimate.method) == (-3.0, 4, "Welch t")
    assert estimate.low == pytest.approx(-3 - half, rel=1e-12)
    assert estimate.high == pytest.approx(-3 + half, rel=1e-12)
    three = difference_interval([5, 6, 7], [1, 2, 3])  # variances 1 and 1, each over 3: se^2 = 2/3, df = 4
    half = t975_closed_form(4) * math.sqrt(2 / 3)
    assert three.value == 4.0
    assert (three.low, three.high) == (pytest.approx(4 - half, rel=1e-12), pytest.approx(4 + half, rel=1e-12))


def test_difference_interval_with_unequal_variances_uses_welchs_df() -> None:
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0]  # va = 1/3, vb = 2/2; df = (4/3)^2 / ((1/3)^2 / 2 + 1 / 1) = 32/19
    estimate = difference_interval(a, b)
    half = t_quantile(0.975, 32 / 19) * math.sqrt(4 / 3)
    assert estimate.value == -3.0
    assert estimate.low == pytest.approx(-3 - half, rel=1e-12)


def test_difference_interval_edge_cases() -> None:
    exact = difference_interval([5.0, 5.0], [2.0, 2.0, math.nan])
    assert (exact.value, exact.low, exact.high, exact.n) == (3.0, 3.0, 3.0, 4)  # both sides constant
    short = difference_interval([5.0], [1.0, 2.0])
    assert (short.value, short.low, short.n) == (3.5, None, 3)
    assert difference_interval([], [1.0, 2.0]).value is None
