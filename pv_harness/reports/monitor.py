"""Token-monitor views: each generated token coloured by its projection on a persona vector.

The data is the `pv_monitor` metadata the `pv/` provider attaches to a model output:
`{"layer", "vector", "kind", "tokens", "projections", "prompt_last", "response_mean"}`. The same
colouring serves the terminal (24-bit ANSI) and HTML pages; `monitor_report` turns a whole eval
log into one page with a per-sample summary next to the judge score.
"""

from __future__ import annotations

import html
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


def tokens_html(tokens: Sequence[str], values: Sequence[float], scale: float | None = None) -> str:
    """One `<span>` per token, coloured, with the projection in its tooltip."""
    scale = scale_of(values) if scale is None else scale
    spans = []
    for token, value in zip(tokens, values, strict=True):
        r, g, b = colour(value, scale)
        text = html.escape(token).replace("\n", "↵<br>")
        spans.append(f'<span class="tok" style="background:rgb({r},{g},{b})" title="{value:+.3f}">{text}</span>')
    return "".join(spans)


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>{head}
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
.tok {{ font-family: ui-monospace, monospace; white-space: pre-wrap; border-radius: 2px; }}
.sample {{ border: 1px solid #ddd; border-radius: 6px; padding: 0.8em; margin: 1em 0; line-height: 1.7; }}
.meta {{ color: #666; font-size: 0.9em; margin-bottom: 0.4em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 2px 10px; border-bottom: 1px solid #eee; text-align: right; }}
.legend span {{ padding: 0 6px; }}
</style></head><body>
<h1>{title}</h1>
<p class="legend">Projection of each generated token's activation on the unit persona vector:
<span style="background:rgb(31,119,180);color:#fff">away from the trait</span>
<span style="background:#fff;border:1px solid #ccc">0</span>
<span style="background:rgb(214,39,40);color:#fff">towards the trait</span> (hover a token for its value).</p>
{body}
</body></html>
"""


def page(title: str, body: str, head: str = "") -> str:
    return PAGE.format(title=html.escape(title), body=body, head=head)


def sample_block(label: str, monitor: dict[str, Any], extra: str = "", scale: float | None = None) -> str:
    meta = (f"layer {monitor['layer']} &middot; last prompt token {monitor['prompt_last']:+.3f} &middot; "
            f"response mean {monitor['response_mean']:+.3f}{extra}")
    return (f'<div class="sample"><div class="meta"><b>{html.escape(label)}</b> &middot; {meta}</div>'
            f"{tokens_html(monitor['tokens'], monitor['projections'], scale)}</div>")




def monitor_frame(log_path: str | Path) -> tuple[list[dict[str, Any]], dict]:
    """Per sample of an eval log: its `pv_monitor` entries, judge scores and a summary per entry."""
    from inspect_ai.log import read_eval_log, read_eval_log_samples

    from pv_harness.logs import COHERENCE_SCORER, TRAIT_SCORER, score_value

    header = read_eval_log(str(log_path), header_only=True)
    rows = []
    for sample in read_eval_log_samples(str(log_path), all_samples_required=False):
        monitors = ((sample.output.metadata or {}) if sample.output else {}).get("pv_monitor") or []
        for index, monitor in enumerate(monitors):
            values = [v for v in monitor["projections"] if v is not None]
            rows.append({
                "sample": f"{sample.id} (epoch {sample.epoch})", "monitor": index, "layer": monitor["layer"],
                "mean": monitor["response_mean"], "max": max(values) if values else math.nan,
                "prompt_last": monitor["prompt_last"], "trait_score": score_value(sample.scores, TRAIT_SCORER),
                "coherence": score_value(sample.scores, COHERENCE_SCORER), "data": monitor,
            })
    return rows, header.eval.metadata or {}


def write_monitor_report(log_path: str | Path, out: str | Path | None = None) -> Path:
    """One page: summary table (mean, max, last prompt token vs judge score, with correlations) and heatmaps."""
    import pandas as pd
    import plotly.graph_objects as go

    from pv_harness.atomic import atomic_write_text
    from pv_harness.reports import figure_div, plotly_script

    rows, meta = monitor_frame(log_path)
    if not rows:
        raise ValueError(f"{log_path} has no pv_monitor data: run the eval on a pv/ model with monitoring on "
                         "(extra_body={'pv': {'monitor': [{'vector': FILE, 'layer': L}]}})")
    out = Path(out) if out else Path(str(log_path)).with_suffix(".monitor.html")
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "data"} for r in rows])
    scored = frame.dropna(subset=["trait_score"])
    corr = {col: (float(scored[col].corr(scored["trait_score"])) if len(scored) > 2 else math.nan)
            for col in ("mean", "max", "prompt_last")}
    corr_line = ", ".join(f"{k}: {'-' if math.isnan(v) else f'{v:+.2f}'}" for k, v in corr.items())
    fig = go.Figure()
    for col in ("mean", "prompt_last"):
        fig.add_trace(go.Scatter(x=scored[col], y=scored["trait_score"], mode="markers", name=col,
                                 text=scored["sample"]))
    fig.update_layout(title="Projection vs judge trait score", xaxis_title="projection", yaxis_title="trait score",
                      height=420)
    scale = scale_of([v for r in rows for v in r["data"]["projections"] if v is not None])
    blocks = "".join(
        sample_block(r["sample"], r["data"], extra=(f" &middot; judge {r['trait_score']:.0f}"
                                                     if r["trait_score"] is not None else " &middot; unscored"),
                     scale=scale)
        for r in rows)
    body = (f"<p>Trait: {html.escape(str(meta.get('trait', '?')))}. Pearson correlation with the judge's trait score "
            f"({len(scored)} scored samples): {corr_line}.</p>"
            f"{figure_div(fig) if len(scored) else ''}"
            f"{frame.drop(columns=['monitor']).round(3).to_html(index=False, na_rep='-')}<h2>Tokens</h2>{blocks}")
    return atomic_write_text(out, page(f"Token monitor: {Path(str(log_path)).name}", body, plotly_script(out.parent)))
