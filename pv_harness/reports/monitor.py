"""Token-monitor views: each generated token coloured by its projection on a persona vector.

The data is the `pv_monitor` metadata the `pv/` provider attaches to a model output:
`{"layer", "vector", "kind", "tokens", "projections", "prompt_last", "response_mean"}`. One colour scale
(`ColourScale`, from `vector_scale`) serves the terminal (24-bit ANSI) and the HTML pages, through the one
`colour` function; `write_monitor_report` turns a whole eval log into one page with a per-sample summary next
to the judge score, and `write_prompt_monitor_report` a `prompt_monitor` log into the paper's last-prompt-token
experiment (projection before generating vs the answer's trait score, by system-prompt strength).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pv_harness.estimates import Estimate

NEUTRAL = (255, 255, 255)
POSITIVE = (214, 39, 40)   # towards the trait
NEGATIVE = (31, 119, 180)  # away from it
SAMPLE_KEYS = ("data", "id", "epoch", "metadata", "question")  # monitor_frame keys that are not summary columns
STRENGTH_COLOURS = {"pos": "rgb(214,39,40)", "neg": "rgb(31,119,180)", "none": "rgb(110,110,110)"}
HEATMAPS_PER_STRENGTH = 3
MONITOR_CSV_COLUMNS = ["sample", "epoch", "strength", "question_id", "prompt_last", "response_mean", "trait",
                       "coherence"]
SPREAD_PERCENTILE = 95


@dataclass(frozen=True)
class ColourScale:
    """White at `centre`, full red at `centre + half_range` and above, full blue at `centre - half_range` and below.

    `centre_from` and `range_from` say where the numbers came from, for the legend.
    """

    centre: float
    half_range: float
    centre_from: str
    range_from: str

    @property
    def low(self) -> float:
        return self.centre - self.half_range

    @property
    def high(self) -> float:
        return self.centre + self.half_range

    def legend(self) -> str:
        """The scale in one line of projection units, as the terminal prints it."""
        return (f"white {self.centre:+.3f} ({self.centre_from}); full red >= {self.high:+.3f}, full blue <= "
                f"{self.low:+.3f} (half-range {self.half_range:.3f}: {self.range_from})")


def vector_scale(vector: str | Path, layer: int, kind: str = "response_avg_diff") -> ColourScale:
    """The scale a vector fixes on its own, so it is known before the first token streams.

    With the baseline extraction stores: white at the neg answers' mean projection and full red at the pos
    answers' (half-range = the pos-neg gap), so a token reads against how the two personas' answers sit. An
    older file or the paper's `.pt` has no baseline: white at 0, and half-range = the vector's norm at `layer`,
    which for a mean-difference vector is the same gap ((mean pos - mean neg) . unit = |v|); only the centre is
    unknown, and the legend says so. A percentile of the tokens shown would need every token first, drift while
    streaming and differ from page to page; the gap is fixed, robust to outlier tokens, and has a meaning.
    """
    from pv_harness.vectors.files import load_vector_rows, read_any, read_baseline

    baseline = read_baseline(read_any(vector, kind).metadata, kind, layer)
    if baseline is not None:
        return ColourScale(baseline.neg, abs(baseline.pos - baseline.neg), "the neg answers' mean projection",
                           "the pos answers' mean minus the neg answers'")
    rows = load_vector_rows(vector, kind)
    norm = float((rows if rows.ndim == 1 else rows[layer]).norm())
    return ColourScale(0.0, norm, "0: no baseline stored with the vector", f"the vector's norm at layer {layer}")


def token_scale(values: Sequence[float]) -> ColourScale:
    """The fallback when the vector cannot be read (inline, or the file moved): white at 0, half-range = the
    nearest-rank 95th percentile of |x| over the tokens shown, so a few outlier tokens do not wash out the rest."""
    spread = sorted(abs(v) for v in values if math.isfinite(v))
    half = spread[math.ceil(SPREAD_PERCENTILE / 100 * len(spread)) - 1] if spread else 0.0
    return ColourScale(0.0, half, "0: the vector file could not be read",
                       f"{SPREAD_PERCENTILE}th percentile of |projection| over the tokens shown")


def monitor_scale(monitor: dict[str, Any], values: Sequence[float]) -> ColourScale:
    """The scale of one monitored vector and layer: `vector_scale` when its file can be read, else `token_scale`."""
    from pv_harness.vectors.files import VectorError

    vector = monitor.get("vector")
    if isinstance(vector, str) and Path(vector).is_file():
        try:
            return vector_scale(vector, int(monitor["layer"]), monitor.get("kind") or "response_avg_diff")
        except VectorError:
            pass  # a file that no longer reads: colour by the tokens shown instead
    return token_scale(values)


def colour(value: float | None, scale: ColourScale) -> tuple[int, int, int]:
    """The one colour function of the terminal and the pages: white at the centre, clipped at +-half-range."""
    if value is None or not scale.half_range or not math.isfinite(value):
        return NEUTRAL
    t = max(-1.0, min(1.0, (value - scale.centre) / scale.half_range))
    end = POSITIVE if t > 0 else NEGATIVE
    return tuple(round(n + (e - n) * abs(t)) for n, e in zip(NEUTRAL, end, strict=True))  # type: ignore[return-value]


def ansi_token(token: str, value: float | None, scale: ColourScale) -> str:
    r, g, b = colour(value, scale)
    return f"\x1b[48;2;{r};{g};{b}m\x1b[38;2;0;0;0m{token}\x1b[0m"


def legend_view(label: str, scale: ColourScale) -> dict[str, Any]:
    """One scale as the `legend` macro of `templates/_monitor.html` draws it: numbers and their colours."""
    return {"label": label, "scale": scale, "low_rgb": colour(scale.low, scale), "high_rgb": colour(scale.high, scale)}


def sample_view(label: str, monitor: dict[str, Any], scale: ColourScale, question: str | None = None) -> dict[str, Any]:
    """One monitored answer as the `sample` macro of `templates/_monitor.html` draws it: each token with its colour.

    An empty answer has no tokens and no response mean (None); a token without a projection stays uncoloured.
    """
    tokens = [{"text": token, "value": value, "rgb": colour(value, scale)}
              for token, value in zip(monitor["tokens"], monitor["projections"], strict=True)]
    return {"label": label, "layer": monitor["layer"], "prompt_last": monitor["prompt_last"],
            "response_mean": monitor["response_mean"], "tokens": tokens, "question": question}


def _scale_key(monitor: dict[str, Any]) -> tuple:
    return (monitor.get("vector"), monitor.get("kind"), monitor["layer"])


def row_scales(rows: Sequence[dict[str, Any]]) -> dict[tuple, ColourScale]:
    """One scale per monitored (vector, kind, layer) among `monitor_frame` rows (`monitor_scale`; its fallback reads
    the tokens of that vector and layer only)."""
    monitors: dict[tuple, dict[str, Any]] = {}
    values: dict[tuple, list[float]] = {}
    for row in rows:
        key = _scale_key(row["data"])
        monitors.setdefault(key, row["data"])
        values.setdefault(key, []).extend(v for v in row["data"]["projections"] if v is not None)
    return {key: monitor_scale(monitors[key], values[key]) for key in monitors}


def _legends(scales: dict[tuple, ColourScale]) -> list[dict[str, Any]]:
    return [legend_view(f"layer {layer}" + (f" of {Path(str(vector)).name}" if len(scales) > 1 else ""), scale)
            for (vector, _, layer), scale in scales.items()]


def write_prompt_page(path: str | Path, title: str, prompt: str, label: str, monitor: dict[str, Any],
                      scale: ColourScale) -> Path:
    """The page `pv monitor --html` writes: one prompt and its monitored answer, on the terminal's scale."""
    from pv_harness.reports.pages import write_page

    return write_page(path, "prompt_monitor.html", title=title, answer=sample_view(label, monitor, scale, prompt),
                      legends=[legend_view(f"layer {monitor['layer']}", scale)])


def monitor_frame(log_path: str | Path) -> tuple[list[dict[str, Any]], dict]:
    """Per sample of an eval log: its `pv_monitor` entries, judge scores and a summary per entry.

    Each row also keeps the sample's `id`, `epoch`, `metadata` and `question`, and the entry itself as `data`.
    """
    from pv_harness.logs import judged_samples, read_header, sample_question

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
                "metadata": sample.metadata or {}, "question": sample_question(sample),
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
    scales = row_scales(rows)
    samples = [{**sample_view(r["sample"], r["data"], scales[_scale_key(r["data"])], r["question"]),
                "judge": r["trait_score"]} for r in rows]
    return write_page(out, "monitor.html", plotly=True, title=f"Token monitor: {Path(str(log_path)).name}",
                      trait=str(meta.get("trait", "?")), scored=len(scored), correlations=corr,
                      figure=figure_html(fig) if len(scored) else None,
                      table=table_html(frame.drop(columns=["monitor"]).round(3)), samples=samples,
                      legends=_legends(scales))


MonitorFrame = tuple[list[dict[str, Any]], dict]  # what `monitor_frame` reads: rows and the eval's metadata


def _prompt_monitor_rows(log_path: str | Path, frame: MonitorFrame | None = None) -> MonitorFrame:
    """The first `pv_monitor` entry of each sample of a `prompt_monitor` log: the headline layer's (the others are
    those of `compare_layers`). `frame`: the log as `monitor_frame` already read it."""
    rows, meta = frame or monitor_frame(log_path)
    if meta.get("pv_task") != "prompt_monitor":
        raise ValueError(f"{log_path} is not a prompt_monitor log (run `inspect eval pv_harness/prompt_monitor`)")
    rows = [r for r in rows if r["monitor"] == 0]
    if not rows:
        raise ValueError(f"{log_path} has no pv_monitor data: run prompt_monitor on a pv/ model")
    return rows, meta


def write_monitor_csv(log_path: str | Path, path: str | Path, frame: MonitorFrame | None = None) -> Path:
    """One row per sample of a `prompt_monitor` log: its projections and judge scores (unscored: empty)."""
    import pandas as pd

    from pv_harness.atomic import atomic_write_text

    rows, _ = _prompt_monitor_rows(log_path, frame)
    table = pd.DataFrame([{
        "sample": r["id"], "epoch": r["epoch"], "strength": r["metadata"].get("strength"),
        "question_id": r["metadata"].get("question_id"), "prompt_last": r["prompt_last"],
        "response_mean": r["mean"], "trait": r["trait_score"], "coherence": r["coherence"],
    } for r in rows], columns=MONITOR_CSV_COLUMNS)
    return atomic_write_text(path, table.to_csv(index=False))


def layer_correlations(log_path: str | Path, frame: MonitorFrame | None = None) -> dict[int, Estimate]:
    """Pearson r (last prompt token vs trait score) at every layer a `prompt_monitor` log monitored."""
    from pv_harness.estimates import correlation

    rows, _ = frame or monitor_frame(log_path)
    layers = sorted({row["monitor"]: row["layer"] for row in rows}.items())  # the headline (monitor 0) first
    return {int(layer): correlation([r["prompt_last"] for r in rows if r["monitor"] == index],
                                    [r["trait_score"] for r in rows if r["monitor"] == index])
            for index, layer in layers}


def write_prompt_monitor_report(log_path: str | Path, out: str | Path | None = None,
                                frame: MonitorFrame | None = None) -> tuple[Path, Estimate]:
    """The last-prompt-token experiment's page; returns it with Pearson r (prompt_last vs trait score).

    The page: r with its n and Fisher z 95% interval, a scatter coloured by system-prompt strength, the mean
    projection per strength (t interval, n), and token heatmaps of a few answers per strength.
    """
    import plotly.graph_objects as go

    from pv_harness.estimates import correlation, mean_interval
    from pv_harness.reports.pages import figure_html, write_page

    frame = frame or monitor_frame(log_path)
    rows, meta = _prompt_monitor_rows(log_path, frame)
    out = Path(out) if out else Path(str(log_path)).with_suffix(".prompt_monitor.html")
    r = correlation([row["prompt_last"] for row in rows], [row["trait_score"] for row in rows])
    by_layer = layer_correlations(log_path, frame)
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
    scales = row_scales(rows)
    samples = {strength: [{**sample_view(f"{row['id']} (epoch {row['epoch']})", row["data"],
                                         scales[_scale_key(row["data"])], row["question"]),
                           "judge": row["trait_score"]} for row in group[:HEATMAPS_PER_STRENGTH]]
               for strength, group in by_strength.items() if group}
    page = write_page(out, "last_prompt_monitor.html", plotly=True,
                      title=f"Last-prompt-token monitor: {meta.get('trait', '?')}", trait=str(meta.get("trait", "?")),
                      layer=meta.get("layer"), vector=meta.get("vector", "?"), log=str(log_path), correlation=r,
                      by_layer=by_layer if len(by_layer) > 1 else {},
                      figure=figure_html(fig) if r.n else None, means=means, samples=samples,
                      legends=_legends(scales))
    return page, r
