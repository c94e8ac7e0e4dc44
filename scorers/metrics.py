"""Metrics for judge scores: mean and standard error over every judged answer.

The metrics read *unreduced* scores, so with `n_per_question` epochs every answer counts once,
as in the paper's CSV (``df[trait].mean()``). Unscored answers (NaN) never reach a metric:
inspect drops them and reports how many in the score's ``unscored_samples``.

When the samples of one log span several polarities (``polarity=both``) or traits, the metric
adds per-group entries: ``pos_mean``, ``pos_stderr``, ``neg_mean``, ...
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from inspect_ai.scorer import Metric, SampleScore, Value, metric

GROUP_KEYS = ("trait", "polarity")


def _values(scores: Sequence[SampleScore]) -> list[float]:
    values = []
    for sample_score in scores:
        value = sample_score.score.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isnan(value):
            continue
        values.append(float(value))
    return values


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)); 0 stderr for n < 2."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    if n < 2:
        return mean, 0.0
    return mean, statistics.stdev(values, mean) / math.sqrt(n)


def _stats(scores: list[SampleScore], keys: Sequence[str], min_groups: int) -> dict[str, float]:
    """Overall mean/stderr, plus `<label>_mean`/`<label>_stderr` for each value of each metadata key
    that splits the samples into at least `min_groups` groups."""
    mean, stderr = mean_stderr(_values(scores))
    result: dict[str, float] = {"mean": mean, "stderr": stderr}
    for key in keys:
        groups: dict[str, list[SampleScore]] = {}
        for sample_score in scores:
            label = (sample_score.sample_metadata or {}).get(key)
            if label is not None:
                groups.setdefault(str(label), []).append(sample_score)
        if len(groups) < min_groups:
            continue
        for label, members in sorted(groups.items()):
            result[f"{label}_mean"], result[f"{label}_stderr"] = mean_stderr(_values(members))
    return result


@metric(scores="unreduced")
def judge_stats() -> Metric:
    """`mean` and `stderr` of the judged answers, plus `<group>_mean`/`<group>_stderr` per polarity or trait."""

    def compute(scores: list[SampleScore]) -> Value:
        return _stats(scores, GROUP_KEYS, min_groups=2)

    return compute


@metric(scores="unreduced")
def grouped_judge_stats(key: str) -> Metric:
    """`mean`/`stderr` overall and per value of the sample metadata `key` (e.g. each steering setting)."""

    def compute(scores: list[SampleScore]) -> Value:
        return _stats(scores, [key], min_groups=1)

    return compute
