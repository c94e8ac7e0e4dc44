"""The steering-sweep report: trait score and coherence against coefficient, a line per layer, and
the layer choice: the setting with the highest trait score whose mean coherence stays above a floor."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from pv_harness.atomic import atomic_write_json
from pv_harness.logs import judged_samples, read_header
from pv_harness.reports.pages import figure_html, table_html, write_page

DEFAULT_COHERENCE_FLOOR = 75.0


@dataclass(frozen=True)
class LayerChoice:
    layer: int
    coef: float
    trait_mean: float
    coherence_mean: float
    coherence_floor: float
    trait: str
    vector: str
    log: str


def sweep_frame(log_path: str | Path) -> tuple[pd.DataFrame, dict]:
    """One row per judged answer and layer: layer, coef, trait score, coherence (NaN = unscored).

    A baseline answer (unsteered, layer None) is every swept layer's coef-0 cell, so it has a row per layer.
    """
    header = read_header(log_path)
    meta = header.eval.metadata or {}
    if meta.get("pv_task") != "steering_sweep":
        raise ValueError(f"{log_path} is not a steering_sweep log")
    rows = []
    for judged in judged_samples(log_path, header):
        sample = judged.sample
        layer = sample.metadata["layer"]
        for row_layer in meta.get("layers", []) if layer is None else [layer]:
            rows.append({
                "layer": int(row_layer), "coef": float(sample.metadata["coef"]),
                "question_id": sample.metadata["question_id"], "epoch": sample.epoch,
                "trait": judged.trait_score, "coherence": judged.coherence,
            })
    frame = pd.DataFrame(rows, columns=["layer", "coef", "question_id", "epoch", "trait", "coherence"])
    return frame.astype({"trait": float, "coherence": float}), meta


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard error and count of trait and coherence per (layer, coef); unscored answers skipped."""
    grouped = frame.groupby(["layer", "coef"])
    return pd.DataFrame({
        "trait_mean": grouped["trait"].mean(), "trait_stderr": grouped["trait"].sem(),
        "coherence_mean": grouped["coherence"].mean(), "coherence_stderr": grouped["coherence"].sem(),
        "n": grouped["trait"].count(), "unscored": grouped["trait"].apply(lambda s: int(s.isna().sum())),
    }).reset_index()


def choose_layer(summary: pd.DataFrame, floor: float = DEFAULT_COHERENCE_FLOOR) -> pd.Series | None:
    """The (layer, coef) with the highest mean trait score among those with mean coherence >= floor.

    Unsteered settings (coef 0) are not candidates: they say nothing about a layer.
    """
    candidates = summary[(summary["coef"] != 0) & (summary["coherence_mean"] >= floor)].dropna(subset=["trait_mean"])
    if candidates.empty:
        return None
    return candidates.sort_values(["trait_mean", "coherence_mean"], ascending=False).iloc[0]


def write_sweep_report(log_path: str | Path, out: str | Path | None = None, *,
                       floor: float = DEFAULT_COHERENCE_FLOOR) -> tuple[Path, LayerChoice | None, Path | None]:
    """Write the HTML page (and the layer choice JSON beside the vector); return their paths."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    frame, meta = sweep_frame(log_path)
    summary = summarise(frame)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("trait score", "coherence"))
    for i, (layer, rows) in enumerate(summary.groupby("layer")):
        colour = f"hsl({(i * 67) % 360},65%,45%)"
        for col, metric in ((1, "trait"), (2, "coherence")):
            fig.add_trace(go.Scatter(
                x=rows["coef"], y=rows[f"{metric}_mean"], mode="lines+markers", name=f"layer {layer}",
                legendgroup=f"layer {layer}", showlegend=col == 1, line={"color": colour},
                error_y={"type": "data", "array": rows[f"{metric}_stderr"].fillna(0), "visible": True},
            ), row=1, col=col)
    fig.add_hline(y=floor, line_dash="dot", line_color="grey", row=1, col=2, annotation_text=f"floor {floor:g}")
    fig.update_xaxes(title_text="steering coefficient")
    fig.update_yaxes(range=[-2, 102])
    trait = meta.get("trait", "")
    fig.update_layout(title=f"Steering sweep: {trait}", height=480)

    best = choose_layer(summary, floor)
    choice = None
    choice_path = None
    if best is not None:
        choice = LayerChoice(layer=int(best["layer"]), coef=float(best["coef"]), trait_mean=float(best["trait_mean"]),
                             coherence_mean=float(best["coherence_mean"]), coherence_floor=floor, trait=trait,
                             vector=meta.get("vector", ""), log=str(log_path))
        if choice.vector:
            choice_path = Path(choice.vector).with_suffix(".layer.json")
            atomic_write_json(choice_path, asdict(choice))
    out = Path(out) if out else Path(str(log_path)).with_suffix(".sweep.html")
    write_page(out, "sweep.html", plotly=True, trait=trait, choice=choice, choice_path=choice_path, floor=floor,
               figure=figure_html(fig), table=table_html(summary.round(2)), log=log_path)
    return out, choice, choice_path


def read_layer_choice(vector: str | Path) -> dict | None:
    path = Path(vector).with_suffix(".layer.json")
    return json.loads(path.read_text()) if path.exists() else None
