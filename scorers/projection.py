"""The projection scorer: a monitored answer's projections as sortable columns in `inspect view`.

The `pv/` provider puts per-token projections on the model output (`metadata["pv_monitor"]`, one entry per
monitored vector and layer; see `pv_harness.provider.api`). This scorer turns each entry into three numbers
beside the judges' scores: `response_mean` (the mean over the answer's tokens), `last_prompt` (the last prompt
token, before generating) and `max` (the answer's largest token). With several entries each key is prefixed by
what tells them apart: `layer{L}_...`, or `{vector file stem}_layer{L}_...` when the vectors differ.

A sample without monitor data is unscored (inspect's NaN sentinel, `Score.unscored`), never 0; so is
`response_mean` and `max` of an empty answer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from inspect_ai.scorer import Score, Scorer, Target, mean, scorer, stderr
from inspect_ai.solver import TaskState

MONITOR_KEY = "pv_monitor"
COLUMNS = ("response_mean", "last_prompt", "max")


def _prefixes(monitors: list[dict[str, Any]]) -> list[str]:
    """One prefix per entry, as short as tells the entries apart ('' for a single entry)."""
    if len(monitors) == 1:
        return [""]
    vectors = {(m.get("vector"), m.get("kind")) for m in monitors}
    prefixes = [f"layer{m['layer']}_" if len(vectors) == 1 else f"{Path(str(m.get('vector'))).stem}_layer{m['layer']}_"
                for m in monitors]
    if len(set(prefixes)) < len(prefixes):  # the same vector and layer twice (another kind): number them
        prefixes = [f"{i}_{p}" for i, p in enumerate(prefixes)]
    return prefixes


def projection_values(monitors: list[dict[str, Any]]) -> dict[str, float]:
    """The score's value: per entry, the response mean, the last prompt token and the max (NaN: no value)."""
    value: dict[str, float] = {}
    for prefix, monitor in zip(_prefixes(monitors), monitors, strict=True):
        tokens = [v for v in monitor["projections"] if v is not None]
        mean_ = monitor.get("response_mean")
        value[f"{prefix}response_mean"] = math.nan if mean_ is None else float(mean_)
        value[f"{prefix}last_prompt"] = float(monitor["prompt_last"])
        value[f"{prefix}max"] = max(tokens) if tokens else math.nan
    return value


@scorer(metrics={"*": [mean(), stderr()]})
def projection() -> Scorer:
    """Projections of the answer on the monitored persona vectors (needs a `pv/` model with monitoring on)."""

    async def score(state: TaskState, target: Target) -> Score:
        monitors = (state.output.metadata or {}).get(MONITOR_KEY) if state.output else None
        if not monitors:
            return Score.unscored(reason="no pv_monitor data: monitor with a pv/ model "
                                         "(extra_body={'pv': {'monitor': [...]}})")
        return Score(value=projection_values(monitors))

    return score
