"""The steering-sweep report: trait score and coherence against coefficient, a line per layer, and
the layer choice: the setting with the highest trait score whose mean coherence stays above a floor.

The floor is absolute (mean coherence >= 75) or relative to the unsteered baseline (mean coherence >=
0.8 x the coef-0 answers' mean). Every mean carries its n and a Student t 95% interval, every steering
effect (trait at the strongest coefficient minus unsteered) a Welch t interval (see pv_harness.estimates).
A layer is chosen only if it was swept and met the rule; otherwise the page says which rule failed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from pv_harness.atomic import atomic_write_json, atomic_write_text
from pv_harness.estimates import difference_interval, mean_interval
from pv_harness.logs import judged_samples, read_header
from pv_harness.reports.pages import figure_html, number, table_html, write_page
from pv_harness.vectors.thresholds import ABSOLUTE_FLOOR

CSV_COLUMNS = ["layer", "coef", "n", "trait_mean", "trait_low", "trait_high", "coherence_n", "coherence_mean",
               "coherence_low", "coherence_high"]


@dataclass(frozen=True)
class LayerChoice:
    layer: int
    coef: float
    trait_mean: float
    coherence_mean: float
    coherence_floor: float  # in coherence points, the relative rule already applied
    trait: str
    vector: str
    log: str
    rule: str = ""


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


def _interval_columns(values: pd.Series, name: str) -> dict[str, float | None]:
    estimate = mean_interval(values.tolist())
    return {f"{name}_low": estimate.low, f"{name}_high": estimate.high}


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, coef): mean, standard error, 95% t interval and count of trait and coherence; unscored skipped.

    `n` counts answers with a trait score, `coherence_n` those with a coherence score.
    """
    grouped = frame.groupby(["layer", "coef"])
    summary = pd.DataFrame({
        "trait_mean": grouped["trait"].mean(), "trait_stderr": grouped["trait"].sem(),
        "coherence_mean": grouped["coherence"].mean(), "coherence_stderr": grouped["coherence"].sem(),
        "n": grouped["trait"].count(), "unscored": grouped["trait"].apply(lambda s: int(s.isna().sum())),
        "coherence_n": grouped["coherence"].count(),
    })
    intervals = pd.DataFrame(
        [{"layer": layer, "coef": coef, **_interval_columns(rows["trait"], "trait"),
          **_interval_columns(rows["coherence"], "coherence")} for (layer, coef), rows in grouped],
        columns=["layer", "coef", "trait_low", "trait_high", "coherence_low", "coherence_high"],
    ).set_index(["layer", "coef"]).astype(float)
    return summary.join(intervals).reset_index()


def _baselines(summary: pd.DataFrame) -> pd.Series:
    """Mean coherence of each layer's unsteered (coef 0) answers; layers without them are absent."""
    return summary[summary["coef"] == 0].set_index("layer")["coherence_mean"].dropna()


def coherence_floors(summary: pd.DataFrame, floor: float, relative: bool = False) -> pd.Series:
    """The floor each layer's settings must reach, in coherence points (relative: floor x that layer's baseline).

    With `relative`, `floor` is a fraction of the unsteered baseline (0 < floor <= 1); a layer without a
    coef-0 baseline has no floor and so no candidate.
    """
    layers = pd.Index(sorted(summary["layer"].unique()), name="layer")
    if not relative:
        return pd.Series(float(floor), index=layers)
    if not 0 < floor <= 1:
        raise ValueError(f"a relative coherence floor is a fraction of the unsteered baseline's mean coherence "
                         f"(0 < floor <= 1, e.g. 0.8); got {floor:g}")
    return (_baselines(summary) * floor).reindex(layers)


def choose_layer(summary: pd.DataFrame, floor: float = ABSOLUTE_FLOOR,
                 relative: bool = False) -> pd.Series | None:
    """The (layer, coef) with the highest mean trait score among those with mean coherence >= floor.

    With `relative`, the floor is `floor` x the unsteered baseline's mean coherence (coef 0 at that layer; in a
    sweep all layers share one baseline). Only positive coefficients (steering towards the trait) are candidates:
    coef 0 says nothing about a layer, and a negative one suppresses the trait the layer is chosen to express.
    """
    floors = summary["layer"].map(coherence_floors(summary, floor, relative))
    candidates = summary[(summary["coef"] > 0) & (summary["coherence_mean"] >= floors)].dropna(subset=["trait_mean"])
    if candidates.empty:
        return None
    return candidates.sort_values(["trait_mean", "coherence_mean"], ascending=False).iloc[0]


def rule_text(summary: pd.DataFrame, floor: float, relative: bool = False) -> str:
    """The choice rule in words, with the floor it comes to (relative: per the baseline's coherence)."""
    if not relative:
        return f"the highest mean trait score among positive coefficients with mean coherence >= {floor:g}"
    baselines = _baselines(summary)
    if baselines.empty:
        return f"the highest mean trait score among positive coefficients with mean coherence >= {floor:g} x baseline"
    counts = summary[summary["coef"] == 0].set_index("layer")["coherence_n"]
    values = sorted({(round(float(v), 6), int(counts[layer])) for layer, v in baselines.items()})
    shown = (f"{values[0][0]:.1f}, n={values[0][1]}, so >= {floor * values[0][0]:.1f}" if len(values) == 1
             else "per layer: " + ", ".join(f"layer {layer} {v:.1f} (n={int(counts[layer])})"
                                            for layer, v in baselines.items()))
    return (f"the highest mean trait score among positive coefficients with mean coherence >= {floor:g} x the "
            f"unsteered baseline's mean coherence ({shown})")


def why_none(summary: pd.DataFrame, floor: float, relative: bool = False) -> str:
    """Why no setting qualifies: which part of the rule failed, naming only settings that were swept."""
    steered = summary[summary["coef"] > 0]
    scored = steered.dropna(subset=["trait_mean", "coherence_mean"])
    if steered.empty:
        return "the sweep has no positive coefficient (steering towards the trait)"
    if relative and _baselines(summary).empty:
        return "a relative coherence floor needs the unsteered baseline (coef 0), which this sweep did not run"
    if scored.empty:
        return "no positive coefficient has a scored answer (trait and coherence)"
    best = scored.sort_values("coherence_mean", ascending=False).iloc[0]
    return (f"no positive coefficient met the coherence floor ({rule_text(summary, floor, relative)}); the most "
            f"coherent was layer {int(best['layer'])} coef {best['coef']:g} at {best['coherence_mean']:.1f}")


def steering_effects(frame: pd.DataFrame) -> pd.DataFrame:
    """Per layer: mean trait at its largest coefficient minus unsteered (coef 0), with Welch's 95% interval.

    The largest positive coefficient (steering towards the trait); in a sweep with no positive one, the most
    negative (it measures suppression). A layer without a coef-0 baseline gets no effect.
    """
    rows = []
    for layer, cells in frame.groupby("layer"):
        coefs = [c for c in cells["coef"].unique() if c != 0]
        if not coefs:
            continue
        coef = max(coefs) if max(coefs) > 0 else min(coefs)
        baseline = cells.loc[cells["coef"] == 0, "trait"].tolist()
        estimate = difference_interval(cells.loc[cells["coef"] == coef, "trait"].tolist(), baseline)
        rows.append({"layer": int(layer), "coef": float(coef), "effect": estimate.value, "low": estimate.low,
                     "high": estimate.high, "n": estimate.n})
    return pd.DataFrame(rows, columns=["layer", "coef", "effect", "low", "high", "n"])


def write_sweep_csv(data: pd.DataFrame, path: str | Path) -> Path:
    """One row per setting (layer, coef) with n and the trait and coherence means with their 95% intervals.

    `data` is a `sweep_frame` (one row per answer) or its `summarise`d table.
    """
    summary = summarise(data) if "trait" in data.columns else data
    return atomic_write_text(path, summary[CSV_COLUMNS].to_csv(index=False))


def _mean_and_interval(row: pd.Series, metric: str) -> str:
    text = number(row[f"{metric}_mean"], ".1f")
    if pd.notna(row[f"{metric}_low"]):
        text += f" [{row[f'{metric}_low']:.1f}, {row[f'{metric}_high']:.1f}]"
    return text


def _page_table(summary: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "layer": summary["layer"], "coef": summary["coef"],
        "trait mean [95% CI]": [_mean_and_interval(r, "trait") for _, r in summary.iterrows()],
        "coherence mean [95% CI]": [_mean_and_interval(r, "coherence") for _, r in summary.iterrows()],
        "n": summary["n"], "unscored": summary["unscored"],
    })


def write_sweep_report(log_path: str | Path, out: str | Path | None = None, *,
                       floor: float = ABSOLUTE_FLOOR,
                       relative: bool = False) -> tuple[Path, LayerChoice | None, Path | None]:
    """Write the HTML page (and the layer choice JSON beside the vector); return their paths.

    `relative`: `floor` is a fraction of the unsteered baseline's mean coherence instead of coherence points.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    frame, meta = sweep_frame(log_path)
    summary = summarise(frame)
    floors = coherence_floors(summary, floor, relative)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("trait score", "coherence"))
    for i, (layer, rows) in enumerate(summary.groupby("layer")):
        colour = f"hsl({(i * 67) % 360},65%,45%)"
        for col, metric in ((1, "trait"), (2, "coherence")):
            mean = rows[f"{metric}_mean"]
            fig.add_trace(go.Scatter(
                x=rows["coef"], y=mean, mode="lines+markers", name=f"layer {layer}",
                legendgroup=f"layer {layer}", showlegend=col == 1, line={"color": colour},
                error_y={"type": "data", "array": (rows[f"{metric}_high"] - mean).fillna(0),
                         "arrayminus": (mean - rows[f"{metric}_low"]).fillna(0), "visible": True},
            ), row=1, col=col)
    for level in sorted(set(floors.dropna().round(6))):
        fig.add_hline(y=level, line_dash="dot", line_color="grey", row=1, col=2, annotation_text=f"floor {level:.1f}")
    fig.update_xaxes(title_text="steering coefficient")
    fig.update_yaxes(range=[-2, 102])
    trait = meta.get("trait", "")
    fig.update_layout(title=f"Steering sweep: {trait} (error bars: 95% t intervals)", height=480)

    best = choose_layer(summary, floor, relative)
    rule = rule_text(summary, floor, relative)
    choice = None
    choice_path = None
    if best is not None:
        choice = LayerChoice(layer=int(best["layer"]), coef=float(best["coef"]), trait_mean=float(best["trait_mean"]),
                             coherence_mean=float(best["coherence_mean"]),
                             coherence_floor=float(floors[int(best["layer"])]), trait=trait,
                             vector=meta.get("vector", ""), log=str(log_path), rule=rule)
        if choice.vector:
            choice_path = Path(choice.vector).with_suffix(".layer.json")
            atomic_write_json(choice_path, asdict(choice))
    effects = steering_effects(frame)
    effects = effects.astype(object).where(effects.notna(), None)  # missing shows as missing, not NaN
    out = Path(out) if out else Path(str(log_path)).with_suffix(".sweep.html")
    write_page(out, "sweep.html", plotly=True, trait=trait, choice=choice, choice_path=choice_path, rule=rule,
               reason=None if choice else why_none(summary, floor, relative), effects=effects.to_dict("records"),
               figure=figure_html(fig), table=table_html(_page_table(summary)), log=log_path)
    return out, choice, choice_path


def read_layer_choice(vector: str | Path) -> dict | None:
    path = Path(vector).with_suffix(".layer.json")
    return json.loads(path.read_text()) if path.exists() else None
