"""The extraction report: what was kept, and per layer the vector norms and held-out AUROC."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pv_harness.reports.pages import figure_html, write_page

if TYPE_CHECKING:
    from pv_harness.vectors.extraction import ExtractionResult


def _best_layer(row: dict) -> str:
    """The layer with the highest held-out AUROC, with its 95% interval and n (older files lack them)."""
    text = f"{row['layer']} (AUROC {row['heldout_auroc']:.3f}"
    low, high = row.get("heldout_auroc_ci") or (None, None)
    if low is not None and high is not None:
        text += f", 95% CI {low:.2f} to {high:.2f} (Hanley-McNeil)"
    counts = row.get("heldout_n")
    if counts:
        text += f", n = {counts['pos']} pos + {counts['neg']} neg held-out answers"
    return text + "; best of every layer, so optimistic)"


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
    if any("heldout_auroc" in r for r in rows):
        fig.add_trace(go.Scatter(x=layers, y=[r.get("heldout_auroc") for r in rows], name="held-out AUROC",
                                 mode="lines+markers", line={"dash": "dot", "color": "black"}), secondary_y=True)
        fig.update_yaxes(title_text="AUROC (pos vs neg, no system prompt)", range=[0, 1.02], secondary_y=True)
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
    return write_page(path, "extraction.html", plotly=True, trait=meta["trait"], facts=facts, figure=figure_html(fig))
