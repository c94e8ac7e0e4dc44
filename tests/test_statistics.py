"""The project's summary statistics (computed with the `statistics` module): exact values on small inputs."""

from __future__ import annotations

import math
import statistics

import pytest
from pv_harness.scorers.metrics import mean_stderr

from pv_harness.estimates import auroc, correlation
from pv_harness.organisms.shift import summarise


def test_pearson() -> None:
    assert correlation([1, 2, 3, 4], [1, 3, 2, 4]).value == pytest.approx(0.8, abs=1e-15)  # sxy 4 / sqrt(5 * 5)
    assert correlation([1, 2, 3, 4], [8, 6, 4, 2]).value == pytest.approx(-1.0, abs=1e-15)
    # pairs with a missing or non-finite value are left out
    assert correlation([1, 2, None, 3, math.nan, 4], [1, 3, 7, 2, 9, 4]).value == pytest.approx(0.8, abs=1e-15)
    assert correlation([1, 2, 3], [5, 5, 5]).value is None  # a constant side has no correlation
    assert correlation([1, 2, 3], [1, 2, None]).value is None  # under three pairs


def test_screening_summary() -> None:
    stats = summarise([{"difference": d} for d in (4.0, 1.0, 10.0, 2.0, 3.0)])
    assert stats == {"examples": 5, "mean": 4.0, "sd": pytest.approx(math.sqrt(12.5), abs=1e-15), "min": 1.0,
                     "p25": 2.0, "median": 3.0, "p75": 4.0, "max": 10.0}
    assert summarise([{"difference": 2.5}])["sd"] == 0.0


def test_judge_mean_and_stderr() -> None:
    mean, stderr = mean_stderr([10.0, 20.0, 30.0, 40.0])
    assert mean == 25.0
    assert stderr == pytest.approx(math.sqrt(500 / 3) / 2, abs=1e-12)  # sample sd sqrt(500/3), over sqrt(4)


def test_auroc_counts_ties_half() -> None:
    assert auroc([1, 2, 3], [2, 2]).value == (0 + 1 + 2) / 6  # 1 loses twice, 2 ties twice, 3 wins twice


def test_correlation_interval_is_fishers_z_by_hand() -> None:
    xs, ys = [1, 2, 3, 4, 5, 6, 7], [2, 1, 4, 3, 7, 5, 6]
    estimate = correlation(xs, ys)
    r = statistics.correlation(xs, ys)
    half = 1.959963984540054 / math.sqrt(7 - 3)
    assert estimate.value == r and estimate.n == 7
    assert estimate.low == pytest.approx(math.tanh(math.atanh(r) - half), abs=1e-12)
    assert estimate.high == pytest.approx(math.tanh(math.atanh(r) + half), abs=1e-12)
    three = correlation([1, 2, 3], [1, 3, 2])
    assert three.value == pytest.approx(0.5) and three.low is None and three.n == 3  # no interval under 4 pairs
    assert "n = 3" in str(three) and "no interval" in str(three)


def test_auroc_interval_is_hanley_mcneil_by_hand() -> None:
    pos, neg = [0.9, 0.8, 0.7, 0.3], [0.6, 0.4, 0.2, 0.1, 0.5]
    estimate = auroc(pos, neg)
    a = 17 / 20  # 0.3 beats 0.2 and 0.1; each of the rest beats all five
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt((a * (1 - a) + 3 * (q1 - a * a) + 4 * (q2 - a * a)) / 20)
    assert estimate.value == pytest.approx(a) and estimate.n == 9
    assert estimate.low == pytest.approx(a - 1.959963984540054 * se)
    assert estimate.high == 1.0  # clipped: a + 1.96 se is above 1
    assert auroc([1.0], []).value is None
