"""Token-monitor views: each generated token coloured by its projection on a persona vector.

The data is the `pv_monitor` metadata the `pv/` provider attaches to a model output:
`{"layer", "vector", "kind", "tokens", "projections", "prompt_last", "response_mean"}`. The same
colouring serves the terminal (24-bit ANSI) and HTML pages; `write_monitor_report` turns a whole eval
log into one page with a per-sample summary next to the judge score, and `write_prompt_monitor_report`
a `prompt_monitor` log into the paper's last-prompt-token experiment (projection before generating vs
the answer's trait score, by system-prompt strength).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pv_harness.estimates import Estimate

NEUTRAL = (255, 255, 255)
POSITIVE = (214, 39, 40)   # towards the trait
NEGATIVE = (31, 119, 180)  # away from it
SAMPLE_KEYS = ("data", "id", "epoch", "metadata")  # monitor_frame keys that are not summary columns
STRENGTH_COLOURS = {"pos": "rgb(214,39,40)", "neg": "rgb(31,119,180)", "none": "rgb(110,110,110)"}
HEATMAPS_PER_STRENGTH = 3
MONITOR_CSV_COLUMNS = ["sample", "epoch", "strength", "question_id", "prompt_last", "response_mean", "trait",
                       "coherence"]


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
    """Per sample of an eval log: its `pv_monitor` entries, judge scores and a summary per entry.

    Each row also keeps the sample's `id`, `epoch` and `metadata`, and the entry itself as `data`.
    """
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
                "coherence": judged.coherence, "data": monitor, "id": sample.id, "epoch": sample.epoch,
                "metadata": sample.metadata or {},
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
    frame = pd.DataFrame([{k: v for k, v in r.items() if k not in SAMPLE_KEYS} for r in rows])
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


def _prompt_monitor_rows(log_path: str | Path) -> tuple[list[dict[str, Any]], dict]:
    """The first `pv_monitor` entry of each sample of a `prompt_monitor` log: the headline layer's (the others are
    those of `compare_layers`)."""
    rows, meta = monitor_frame(log_path)
    if meta.get("pv_task") != "prompt_monitor":
        raise ValueError(f"{log_path} is not a prompt_monitor log (run `inspect eval pv_harness/prompt_monitor`)")
    rows = [r for r in rows if r["monitor"] == 0]
    if not rows:
        raise ValueError(f"{log_path} has no pv_monitor data: run prompt_monitor on a pv/ model")
    return rows, meta


def write_monitor_csv(log_path: str | Path, path: str | Path) -> Path:
    """One row per sample of a `prompt_monitor` log: its projections and judge scores (unscored: empty)."""
    import pandas as pd

    from pv_harness.atomic import atomic_write_text

    rows, _ = _prompt_monitor_rows(log_path)
    frame = pd.DataFrame([{
        "sample": r["id"], "epoch": r["epoch"], "strength": r["metadata"].get("strength"),
        "question_id": r["metadata"].get("question_id"), "prompt_last": r["prompt_last"],
        "response_mean": r["mean"], "trait": r["trait_score"], "coherence": r["coherence"],
    } for r in rows], columns=MONITOR_CSV_COLUMNS)
    return atomic_write_text(path, frame.to_csv(index=False))


def layer_correlations(log_path: str | Path) -> dict[int, Estimate]:
    """Pearson r (last prompt token vs trait score) at every layer a `prompt_monitor` log monitored."""
    from pv_harness.estimates import correlation

    rows, _ = monitor_frame(log_path)
    layers = sorted({row["monitor"]: row["layer"] for row in rows}.items())  # the headline (monitor 0) first
    return {int(layer): correlation([r["prompt_last"] for r in rows if r["monitor"] == index],
                                    [r["trait_score"] for r in rows if r["monitor"] == index])
            for index, layer in layers}


def write_prompt_monitor_report(log_path: str | Path, out: str | Path | None = None) -> tuple[Path, Estimate]:
    """The last-prompt-token experiment's page; returns it with Pearson r (prompt_last vs trait score).

    The page: r with its n and Fisher z 95% interval, a scatter coloured by system-prompt strength, the mean
    projection per strength (t interval, n), and token heatmaps of a few answers per strength.
    """
    import plotly.graph_objects as go

    from pv_harness.estimates import correlation, mean_interval
    from pv_harness.reports.pages import figure_html, write_page

    rows, meta = _prompt_monitor_rows(log_path)
    out = Path(out) if out else Path(str(log_path)).with_suffix(".prompt_monitor.html")
    r = correlation([row["prompt_last"] for row in rows], [row["trait_score"] for row in rows])
    by_layer = layer_correlations(log_path)
    by_strength = {s: [row for row in rows if row["metadata"].get("strength") == s] for s in STRENGTH_COLOURS}
    fig = go.Figure()
    for strength, group in by_strength.items():
        scored = [row for row in group if row["trait_score"] is not None]
        if scored:
            fig.add_trace(go.Scatter(x=[row["prompt_last"] for row in scored], y=[row["trait_score"] for row in scored],
                                     mode="markers", name=f"{strength} system prompt",
                                     marker={"color": STRENGTH_COLOURS[strength]},
                                     text=[f"{row['id']} (epoch {row['epoch']})" for row in scored]))
    fig.update_layout(title="Last prompt token's projection vs the answer's trait score",
                      xaxis_title=f"projection at layer {meta.get('layer')} (last prompt token)",
                      yaxis_title="trait score", height=440)
    means = {strength: mean_interval([row["prompt_last"] for row in group])
             for strength, group in by_strength.items() if group}
    scale = scale_of([v for row in rows for v in row["data"]["projections"] if v is not None])
    samples = {strength: [{**sample_view(f"{row['id']} (epoch {row['epoch']})", row["data"], scale),
                           "judge": row["trait_score"]} for row in group[:HEATMAPS_PER_STRENGTH]]
               for strength, group in by_strength.items() if group}
    page = write_page(out, "last_prompt_monitor.html", plotly=True,
                      title=f"Last-prompt-token monitor: {meta.get('trait', '?')}", trait=str(meta.get("trait", "?")),
                      layer=meta.get("layer"), vector=meta.get("vector", "?"), log=str(log_path), correlation=r,
                      by_layer=by_layer if len(by_layer) > 1 else {},
                      figure=figure_html(fig) if r.n else None, means=means, samples=samples,
                      positive=POSITIVE, negative=NEGATIVE)
    return page, r
