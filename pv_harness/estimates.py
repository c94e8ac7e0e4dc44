"""Estimates as users see them: each with its n and a 95% interval, so no number stands alone.

- Pearson's r: Fisher's z interval, tanh(atanh(r) +- z / sqrt(n - 3)), for n >= 4 pairs (none below).
- AUROC: the normal interval from Hanley & McNeil's (1982) standard error, clipped to [0, 1].
Both are analytic (no bootstrap), so the same data always give the same interval.
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
