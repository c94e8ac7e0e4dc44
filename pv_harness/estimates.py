"""Estimates as users see them: each with its n and a 95% interval, so no number stands alone.

- Pearson's r: Fisher's z interval, tanh(atanh(r) +- z / sqrt(n - 3)), for n >= 4 pairs (none below).
- AUROC: the normal interval from Hanley & McNeil's (1982) standard error, clipped to [0, 1].
- A mean: Student's t interval, mean +- t(0.975, n - 1) sd / sqrt(n), for n >= 2 values (none below).
- A difference of two means: Welch's t interval (unequal variances, Welch-Satterthwaite degrees of freedom).
All are analytic (no bootstrap), so the same data always give the same interval. There is no scipy here: the
t quantile inverts the exact Student t distribution function (the regularised incomplete beta function by its
continued fraction), so it holds at every n, fractional Welch degrees of freedom included, with no normal
approximation for large n.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = statistics.NormalDist().inv_cdf(0.975)


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval (None when there is too little data) and the n it rests on."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    method: str

    def __str__(self) -> str:
        if self.value is None:
            return f"n/a (n = {self.n})"
        interval = f"95% CI {self.low:+.2f} to {self.high:+.2f}" if self.low is not None else "no interval"
        return f"{self.value:+.3f} ({interval}, n = {self.n}, {self.method})"


def correlation(xs: Sequence[float | None], ys: Sequence[float | None]) -> Estimate:
    """Pearson's r over the pairs where both values are finite; None under 3 pairs or for a constant side."""
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True)
             if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    n = len(pairs)
    r = None
    if n >= 3:
        try:
            r = statistics.correlation([x for x, _ in pairs], [y for _, y in pairs])
        except statistics.StatisticsError:  # a constant side has no correlation
            r = None
    if r is None or n < 4:
        return Estimate(r, None, None, n, "Fisher z")
    if abs(r) >= 1.0:
        return Estimate(r, r, r, n, "Fisher z")
    half = Z95 / math.sqrt(n - 3)
    z = math.atanh(r)
    return Estimate(r, math.tanh(z - half), math.tanh(z + half), n, "Fisher z")


def auroc(pos: Sequence[float], neg: Sequence[float]) -> Estimate:
    """P(a random pos scores above a random neg), ties counted half (Mann-Whitney); n = pos + neg."""
    n_pos, n_neg = len(pos), len(neg)
    if not n_pos or not n_neg:
        return Estimate(None, None, None, n_pos + n_neg, "Hanley-McNeil")
    a = statistics.fmean((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    variance = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    half = Z95 * math.sqrt(max(variance, 0.0))
    return Estimate(a, max(0.0, a - half), min(1.0, a + half), n_pos + n_neg, "Hanley-McNeil")


def _finite(values: Sequence[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _t_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0: half the regularised incomplete beta I_x(df / 2, 1 / 2) at x = df / (df + t^2)."""
    a, b = df / 2, 0.5
    x, y = df / (df + t * t), t * t / (df + t * t)  # y = 1 - x without cancellation
    if y == 0.0:
        return 0.5
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y))
    if x < (a + 1) / (a + b + 2):
        return 0.5 * front * _beta_fraction(a, b, x) / a
    return 0.5 * (1.0 - front * _beta_fraction(b, a, y) / b)


def t_quantile(p: float, df: float) -> float:
    """The p quantile of Student's t with df (> 0, not necessarily whole) degrees of freedom, by bisection."""
    if not 0 < p < 1 or not df > 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0; got p={p!r}, df={df!r}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    tail = 1 - p
    low, high = 0.0, 1.0
    while _t_tail(high, df) > tail:
        low, high = high, 2 * high
    for _ in range(200):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        low, high = (middle, high) if _t_tail(middle, df) > tail else (low, middle)
    return (low + high) / 2


def mean_interval(values: Sequence[float | None]) -> Estimate:
    """The mean of the finite values with Student's t interval; missing (None, NaN) values are left out."""
    xs = _finite(values)
    n = len(xs)
    if not n:
        return Estimate(None, None, None, 0, "t")
    mean = statistics.fmean(xs)
    if n < 2:
        return Estimate(mean, None, None, n, "t")
    half = t_quantile(0.975, n - 1) * statistics.stdev(xs) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, "t")


def difference_interval(a: Sequence[float | None], b: Sequence[float | None]) -> Estimate:
    """mean(a) - mean(b) with Welch's t interval (each side needs 2 finite values); n = both sides' counts."""
    xs, ys = _finite(a), _finite(b)
    n = len(xs) + len(ys)
    if not xs or not ys:
        return Estimate(None, None, None, n, "Welch t")
    difference = statistics.fmean(xs) - statistics.fmean(ys)
    if len(xs) < 2 or len(ys) < 2:
        return Estimate(difference, None, None, n, "Welch t")
    va, vb = statistics.variance(xs) / len(xs), statistics.variance(ys) / len(ys)
    if va + vb == 0:  # both sides constant: the difference is known exactly
        return Estimate(difference, difference, difference, n, "Welch t")
    df = (va + vb) ** 2 / (va * va / (len(xs) - 1) + vb * vb / (len(ys) - 1))
    half = t_quantile(0.975, df) * math.sqrt(va + vb)
    return Estimate(difference, difference - half, difference + half, n, "Welch t")
