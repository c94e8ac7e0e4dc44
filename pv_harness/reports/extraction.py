"""The extraction report: what was kept, and per layer the vector norms and held-out AUROC.

Two AUROCs per layer, both with their n and Hanley-McNeil 95% interval: text-only (held-out answers
re-encoded without the persona system prompt: does the direction read the answer?) and in context (with
the system prompt they were written under, as extraction pooled them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pv_harness.reports.pages import figure_html, number, table_html, write_page

if TYPE_CHECKING:
    import pandas as pd

    from pv_harness.vectors.extraction import ExtractionResult

AUROCS = {"": "text only", "_context": "in context"}  # key suffix -> what the page calls it


def _auroc(row: dict, suffix: str) -> str:
    """One layer's AUROC with its 95% interval (older files lack the interval and the in-context one)."""
    value = row.get(f"heldout_auroc{suffix}")
    if value is None:
        return "-"
    low, high = row.get(f"heldout_auroc{suffix}_ci") or (None, None)
    interval = f", 95% CI {low:.2f} to {high:.2f}" if low is not None and high is not None else ""
    return f"{number(value, '.3f')}{interval}"


def _best_layer(row: dict) -> str:
    """The layer with the highest text-only held-out AUROC, with both AUROCs, their intervals and n."""
    parts = [f"{name} AUROC {_auroc(row, suffix)}" for suffix, name in AUROCS.items()
             if row.get(f"heldout_auroc{suffix}") is not None]
    counts = row.get("heldout_n")
    if counts:
        parts.append(f"n = {counts['pos']} pos + {counts['neg']} neg held-out answers")
    return f"{row['layer']} ({'; '.join(parts)}; Hanley-McNeil intervals; best of every layer, so optimistic)"


def _auroc_traces(rows: list[dict], suffix: str, name: str, colour: str) -> list:
    """The AUROC curve and its 95% band (layers without an interval leave the band out)."""
    import plotly.graph_objects as go

    layers = [r["layer"] for r in rows]
    traces = [go.Scatter(x=layers, y=[r.get(f"heldout_auroc{suffix}") for r in rows], name=f"held-out AUROC, {name}",
                         legendgroup=name, mode="lines+markers", line={"dash": "dot", "color": colour})]
    banded = [r for r in rows if None not in (r.get(f"heldout_auroc{suffix}_ci") or [None])]
    if banded:
        xs = [r["layer"] for r in banded]
        lows = [r[f"heldout_auroc{suffix}_ci"][0] for r in banded]
        highs = [r[f"heldout_auroc{suffix}_ci"][1] for r in banded]
        traces.append(go.Scatter(x=xs + xs[::-1], y=highs + lows[::-1], fill="toself", fillcolor=colour,
                                 opacity=0.15, line={"width": 0}, hoverinfo="skip", legendgroup=name,
                                 name=f"95% CI, {name}"))
    return traces


def _auroc_table(rows: list[dict]) -> pd.DataFrame:
    """One row per layer with held-out answers: both AUROCs with their intervals, and the counts."""
    import pandas as pd

    return pd.DataFrame([{
        "layer": r["layer"], **{f"AUROC {name}": _auroc(r, suffix) for suffix, name in AUROCS.items()},
        "n pos": r["heldout_n"]["pos"], "n neg": r["heldout_n"]["neg"],
    } for r in rows if r.get("heldout_n")])


def write_extraction_report(result: ExtractionResult, path: str | Path) -> Path:
    """The page beside the vector file: what extraction kept and dropped, and which layer separates best."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    meta = result.vectors.metadata
    rows = result.diagnostics
    layers = [r["layer"] for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for kind in ("response_avg_diff", "prompt_avg_diff", "prompt_last_diff"):
        fig.add_trace(go.Scatter(x=layers, y=[r[f"{kind}_norm"] for r in rows], name=f"norm {kind}",
                                 mode="lines+markers"), secondary_y=False)
    for (suffix, name), colour in zip(AUROCS.items(), ("black", "darkorange"), strict=True):
        if any(f"heldout_auroc{suffix}" in r for r in rows):
            for trace in _auroc_traces(rows, suffix, name, colour):
                fig.add_trace(trace, secondary_y=True)
    if any("heldout_auroc" in r for r in rows):
        fig.update_yaxes(title_text="held-out AUROC (pos vs neg)", range=[0, 1.02], secondary_y=True)
    fig.update_yaxes(title_text="vector norm", secondary_y=False)
    fig.update_layout(title=f"{meta['trait']} on {meta['model']}: persona vector by layer", xaxis_title="layer "
                      "(0 = embeddings)", height=480)
    best = max((r for r in rows if r.get("heldout_auroc") is not None), key=lambda r: r["heldout_auroc"], default=None)
    facts = {
        "model": meta["model"], "trait": meta["trait"], "method": meta["method"], "filter": meta["filter"],
        "thresholds": f"trait {meta['threshold']}, coherence {meta['coherence_threshold']}",
        "kept": f"{meta['pos_samples']} pos, {meta['neg_samples']} neg",
        "dropped": ", ".join(f"{n} {k}" for k, n in sorted(meta["dropped"].items())) or "none",
        "held-out questions": ", ".join(map(str, meta["heldout_questions"])) or "none",
        "best held-out layer": _best_layer(best) if best else "-",
        "judge": meta.get("judge") or "-",
        "vector file": str(result.path),
    }
    table = _auroc_table(rows)
    return write_page(path, "extraction.html", plotly=True, trait=meta["trait"], facts=facts, figure=figure_html(fig),
                      table=table_html(table) if len(table) else None)
