"""The project's summary statistics (computed with the `statistics` module): exact values on small inputs."""

from __future__ import annotations

import math

import pytest
from pv_harness.scorers.metrics import mean_stderr

from pv_harness.organisms.shift import pearson, summarise
from pv_harness.vectors.extraction import auroc


def test_pearson() -> None:
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8, abs=1e-15)  # sxy 4 / sqrt(5 * 5)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0, abs=1e-15)
    # pairs with a missing or non-finite value are left out
    assert pearson([1, 2, None, 3, math.nan, 4], [1, 3, 7, 2, 9, 4]) == pytest.approx(0.8, abs=1e-15)
    assert pearson([1, 2, 3], [5, 5, 5]) is None  # a constant side has no correlation
    assert pearson([1, 2, 3], [1, 2, None]) is None  # under three pairs


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
    assert auroc([1, 2, 3], [2, 2]) == (0 + 1 + 2) / 6  # 1 loses twice, 2 ties twice, 3 wins twice
