"""The model-organism results page: one tab per trained trait, detection scores and fine-tuning shifts by
training strength."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from pv_harness.organisms.training import STRENGTHS
from pv_harness.reports.pages import figure_html, write_page


def _order(strength: str) -> int:
    return STRENGTHS.index(strength) if strength in STRENGTHS else -1


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) >= 2 else 0.0


def write_results_page(path: Path, name: str, records: list[dict[str, Any]], shifts: dict[str, Any],
                       correlations: dict[str, Any], *, weak_judge_note: str | None = None) -> Path:
    """One tab per trained trait: detection score vs strength (a line per task, error bars = stderr),
    and, with vectors, the shift along each trait vector vs strength beside the random-direction null.
    `weak_judge_note`: a warning the caller shows when it judges the grader too weak to trust."""
    import plotly.graph_objects as go

    trained = sorted({r["trait"] for r in records if r["strength"] in STRENGTHS})
    panels = []
    for trait in trained:
        rows = [r for r in records if r["trait"] == trait]
        fig = go.Figure()
        for task in sorted({r["task"] for r in rows}):
            pts = sorted((r for r in rows if r["task"] == task), key=lambda r: _order(r["strength"]))
            fig.add_trace(go.Scatter(x=[r["strength"] for r in pts], y=[r["score"] for r in pts],
                                     error_y={"type": "data", "array": [r["stderr"] or 0 for r in pts]},
                                     mode="lines+markers", name=f"{task} detection"))
        fig.update_layout(title=f"Models trained on {trait} data: trait scores by strength",
                          xaxis={"title": "training strength", "categoryorder": "array", "categoryarray": STRENGTHS},
                          yaxis={"title": "trait score (0-100)", "range": [0, 100]}, height=450)
        figures = [figure_html(fig)]
        names = {r["model"]: r["strength"] for r in rows}
        if shifts:
            sfig = go.Figure()
            for vtrait in sorted({t for s in shifts.values() for t in s}):
                by_strength = sorted(((names[n], s[vtrait]) for n, s in shifts.items() if n in names and vtrait in s),
                                     key=lambda p: _order(p[0]))
                if not by_strength:
                    continue
                strengths = [strength for strength, _ in by_strength]
                sfig.add_trace(go.Scatter(x=strengths, y=[shift["shift"] for _, shift in by_strength],
                                          mode="lines+markers", name=f"{vtrait} vector"))
                means = [statistics.fmean(shift["null"]) for _, shift in by_strength]
                sds = [_sd(shift["null"]) for _, shift in by_strength]
                sfig.add_trace(go.Scatter(x=strengths, y=means, error_y={"type": "data", "array": sds},
                                          mode="lines+markers", line={"dash": "dot"},
                                          name=f"random directions ({vtrait} norm), mean ± sd"))
            sfig.update_layout(title="Fine-tuning shift at the last prompt token (model - base, on the unit vector)",
                               xaxis={"title": "training strength", "categoryorder": "array",
                                      "categoryarray": STRENGTHS},
                               yaxis={"title": "projection shift"}, height=400)
            figures.append(figure_html(sfig))
        panels.append({"trait": trait, "figures": figures})
    return write_page(path, "organisms.html", plotly=True, name=name, panels=panels, correlations=correlations,
                      weak_judge_note=weak_judge_note)
