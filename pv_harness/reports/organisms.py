"""The model-organism results, as text and as a page: one tab per trained trait, detection scores and
fine-tuning shifts by training strength. The terminal (`pv experiment results`) and the page print the
same sentences, built here, so they cannot disagree."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pv_harness.organisms.training import STRENGTHS
from pv_harness.reports.pages import figure_html, table_html, write_page

if TYPE_CHECKING:
    import pandas as pd

FEW_POINTS = 10  # below this many models a correlation is reported with the caveat that it shows little


def _order(strength: str) -> int:
    return STRENGTHS.index(strength) if strength in STRENGTHS else -1


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) >= 2 else 0.0


def cell_text(record: dict[str, Any]) -> str:
    """One model x task cell: `mean (95% CI low to high, n = k)`, saying so when there is no interval."""
    n, (low, high) = record["scored"], record["ci"]
    unscored = f", {record['unscored']} unscored" if record.get("unscored") else ""
    if record["score"] is None:
        return f"- (n = 0{unscored})"
    if low is None:
        return f"{record['score']:.1f} (n = {n}: no interval{unscored})"
    return f"{record['score']:.1f} (95% CI {low:.1f} to {high:.1f}, n = {n}{unscored})"


def cell_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows: each model (its trained trait and strength); columns: detection tasks; cells: `cell_text`."""
    import pandas as pd

    ordered = sorted(records, key=lambda r: (r["trait"], _order(r["strength"]), r["model"]))
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for r in ordered:
        rows.setdefault((r["trait"], r["strength"], r["model"]), {})[f"{r['task']} detection"] = cell_text(r)
    frame = pd.DataFrame(list(rows.values()), index=pd.MultiIndex.from_tuples(
        list(rows), names=["trained trait", "strength", "model"]))
    return frame[sorted(frame.columns)].fillna("-")


def difference_text(d: dict[str, Any]) -> str:
    """`strength - baseline` for one trained trait and task, with its interval and what it shows."""
    head = f"{d['trait']}-trained, {d['task']} detection: {d['strength']} - baseline = "
    n = f"n = {d['n'][0]} vs {d['n'][1]}"
    if d["difference"] is None:
        return head + f"n/a ({n})"
    low, high = d["ci"]
    if low is None:
        return head + f"{d['difference']:+.1f} ({n}: no interval; it needs 2 scored answers on each side)"
    verdict = ("higher than baseline" if low > 0 else "lower than baseline" if high < 0
               else "no difference shown at this n")
    return head + f"{d['difference']:+.1f} (95% CI {low:+.1f} to {high:+.1f}, {n}, {d['method']}): {verdict}"


def correlation_text(trait: str, c: dict[str, Any]) -> str:
    """The shift-vs-score correlation with its n and interval; under FEW_POINTS models, how little it shows."""
    n, r = c["n"], c["pearson"]
    head = f"shift vs {trait} score: "
    if r is None:
        text = head + f"r = n/a (n = {n}: a correlation needs 3 models with a shift and a score, and varying ones)"
    elif c["pearson_ci"][0] is None:
        text = head + f"r = {r:+.3f}, n = {n}: no interval; {n} points cannot establish a correlation"
    else:
        low, high = c["pearson_ci"]
        text = head + f"r = {r:+.3f} (95% CI {low:+.2f} to {high:+.2f}, n = {n}, Fisher z)"
        if n < FEW_POINTS:
            text += f"; a correlation over {n} points shows little"
    if c["null_fraction_as_large"] is not None:
        text += (f"; random directions: mean |r| = {c['null_mean_abs']:.3f}, "
                 f"{c['null_fraction_as_large']:.0%} with |r| at least as large")
    return text


def write_results_page(path: Path, name: str, records: list[dict[str, Any]], shifts: dict[str, Any],
                       correlations: dict[str, Any], differences: list[dict[str, Any]], *,
                       notes: list[str] | None = None) -> Path:
    """One tab per trained trait: detection score vs strength (a line per task, error bars = 95% t interval),
    the cells with n and interval, each strength against baseline, and, with vectors, the shift along each
    trait vector vs strength beside the random-direction null. `notes`: what the caller says about the judge."""
    import plotly.graph_objects as go

    trained = sorted({r["trait"] for r in records if r["strength"] in STRENGTHS})
    panels = []
    for trait in trained:
        rows = [r for r in records if r["trait"] == trait]
        fig = go.Figure()
        for task in sorted({r["task"] for r in rows}):
            pts = sorted((r for r in rows if r["task"] == task), key=lambda r: _order(r["strength"]))
            up = [0 if r["ci"][1] is None else r["ci"][1] - r["score"] for r in pts]
            down = [0 if r["ci"][0] is None else r["score"] - r["ci"][0] for r in pts]
            fig.add_trace(go.Scatter(x=[r["strength"] for r in pts], y=[r["score"] for r in pts],
                                     error_y={"type": "data", "symmetric": False, "array": up, "arrayminus": down},
                                     mode="lines+markers", name=f"{task} detection"))
        fig.update_layout(title=f"Models trained on {trait} data: trait scores by strength (95% t intervals)",
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
        panels.append({"trait": trait, "figures": figures,
                       "table": table_html(cell_table(rows).reset_index()),
                       "differences": [difference_text(d) for d in differences if d["trait"] == trait]})
    return write_page(path, "organisms.html", plotly=True, name=name, panels=panels, notes=notes or [],
                      correlations=[correlation_text(trait, c) for trait, c in correlations.items()])
