"""Token-monitor views: each generated token coloured by its projection on a persona vector.

The data is the `pv_monitor` metadata the `pv/` provider attaches to a model output:
`{"layer", "vector", "kind", "tokens", "projections", "prompt_last", "response_mean"}`. The same
colouring serves the terminal (24-bit ANSI) and HTML pages; `monitor_report` turns a whole eval
log into one page with a per-sample summary next to the judge score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NEUTRAL = (255, 255, 255)
POSITIVE = (214, 39, 40)   # towards the trait
NEGATIVE = (31, 119, 180)  # away from it


def colour(value: float, scale: float) -> tuple[int, int, int]:
    """White at 0, red for positive, blue for negative, full colour at |value| >= scale."""
    if not scale or not math.isfinite(value):
        return NEUTRAL
    t = max(-1.0, min(1.0, value / scale))
    end = POSITIVE if t > 0 else NEGATIVE
    return tuple(round(n + (e - n) * abs(t)) for n, e in zip(NEUTRAL, end, strict=True))  # type: ignore[return-value]


def scale_of(values: Sequence[float]) -> float:
    finite = [abs(v) for v in values if math.isfinite(v)]
    return max(finite) if finite else 0.0


def ansi_token(token: str, value: float, scale: float) -> str:
    r, g, b = colour(value, scale)
    return f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{token}\x1b[0m"


def sample_view(label: str, monitor: dict[str, Any], scale: float | None = None) -> dict[str, Any]:
    """One monitored answer as the `sample` macro of `templates/_monitor.html` draws it: each token with its colour.

    An empty answer has no tokens and no response mean (None); a token without a projection stays uncoloured.
    """
    values = monitor["projections"]
    scale = scale_of([v for v in values if v is not None]) if scale is None else scale
    tokens = [{"text": token, "value": value, "rgb": colour(value, scale) if value is not None else NEUTRAL}
              for token, value in zip(monitor["tokens"], values, strict=True)]
    return {"label": label, "layer": monitor["layer"], "prompt_last": monitor["prompt_last"],
            "response_mean": monitor["response_mean"], "tokens": tokens}


def write_prompt_page(path: str | Path, title: str, prompt: str, label: str, monitor: dict[str, Any]) -> Path:
    """The page `pv monitor --html` writes: one prompt and its monitored answer."""
    from pv_harness.reports.pages import write_page

    return write_page(path, "prompt_monitor.html", title=title, prompt=prompt, answer=sample_view(label, monitor),
                      positive=POSITIVE, negative=NEGATIVE)


def monitor_frame(log_path: str | Path) -> tuple[list[dict[str, Any]], dict]:
    """Per sample of an eval log: its `pv_monitor` entries, judge scores and a summary per entry."""
    from pv_harness.logs import judged_samples, read_header

    header = read_header(log_path)
    rows = []
    for judged in judged_samples(log_path, header):
        sample = judged.sample
        monitors = ((sample.output.metadata or {}) if sample.output else {}).get("pv_monitor") or []
        for index, monitor in enumerate(monitors):
            values = [v for v in monitor["projections"] if v is not None]
            rows.append({
                "sample": f"{sample.id} (epoch {sample.epoch})", "monitor": index, "layer": monitor["layer"],
                "mean": monitor["response_mean"], "max": max(values) if values else math.nan,
                "prompt_last": monitor["prompt_last"], "trait_score": judged.trait_score,
                "coherence": judged.coherence, "data": monitor,
            })
    return rows, header.eval.metadata or {}


def write_monitor_report(log_path: str | Path, out: str | Path | None = None) -> Path:
    """One page: summary table (mean, max, last prompt token vs judge score, with correlations) and heatmaps."""
    import pandas as pd
    import plotly.graph_objects as go

    from pv_harness.estimates import correlation
    from pv_harness.reports.pages import figure_html, table_html, write_page

    rows, meta = monitor_frame(log_path)
    if not rows:
        raise ValueError(f"{log_path} has no pv_monitor data: run the eval on a pv/ model with monitoring on "
                         "(extra_body={'pv': {'monitor': [{'vector': FILE, 'layer': L}]}})")
    out = Path(out) if out else Path(str(log_path)).with_suffix(".monitor.html")
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "data"} for r in rows])
    scored = frame.dropna(subset=["trait_score"])
    corr = {col: correlation(frame[col].tolist(), frame["trait_score"].tolist())
            for col in ("mean", "max", "prompt_last")}
    fig = go.Figure()
    for col in ("mean", "prompt_last"):
        fig.add_trace(go.Scatter(x=scored[col], y=scored["trait_score"], mode="markers", name=col,
                                 text=scored["sample"]))
    fig.update_layout(title="Projection vs judge trait score", xaxis_title="projection", yaxis_title="trait score",
                      height=420)
    scale = scale_of([v for r in rows for v in r["data"]["projections"] if v is not None])
    samples = [{**sample_view(r["sample"], r["data"], scale), "judge": r["trait_score"]} for r in rows]
    return write_page(out, "monitor.html", plotly=True, title=f"Token monitor: {Path(str(log_path)).name}",
                      trait=str(meta.get("trait", "?")), scored=len(scored), correlations=corr,
                      figure=figure_html(fig) if len(scored) else None,
                      table=table_html(frame.drop(columns=["monitor"]).round(3)), samples=samples,
                      positive=POSITIVE, negative=NEGATIVE)
