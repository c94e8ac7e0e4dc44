"""What a `pv run` found, as numbers: `results.json` and the run page that leads with them.

Every figure carries its n and, for an estimate, a 95% interval; a layer is named only if the sweep
tried it (`layer` is null when no setting met the rule, and `monitor_layer` says which swept layer was
monitored instead).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pv_harness.atomic import atomic_write_json
from pv_harness.estimates import Estimate, difference_interval, mean_interval
from pv_harness.logs import CollectionLog
from pv_harness.reports.sweep import LayerChoice, steering_effects, summarise

EXAMPLE_CHARS = 400  # of each example answer shown on the run page


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _interval(low: Any, high: Any) -> list[float | None] | None:
    low, high = _finite(low), _finite(high)
    return None if low is None or high is None else [low, high]


@dataclass(frozen=True)
class LayerAuroc:
    """The held-out AUROCs at one layer: in context (`auroc`) and text-only (`auroc_text`)."""

    layer: int
    auroc: float | None
    auroc_ci: list[float | None] | None
    auroc_text: float | None
    auroc_text_ci: list[float | None] | None
    n: int


def layer_auroc(diagnostics: list[dict[str, Any]], layer: int) -> LayerAuroc:
    """The extraction diagnostics' held-out AUROCs at `layer` (None when nothing was held out)."""
    row = next((r for r in diagnostics if r["layer"] == layer), {})
    counts = row.get("heldout_n") or {}
    return LayerAuroc(layer=layer, auroc=_finite(row.get("heldout_auroc_context")),
                      auroc_ci=_interval(*(row.get("heldout_auroc_context_ci") or (None, None))),
                      auroc_text=_finite(row.get("heldout_auroc")),
                      auroc_text_ci=_interval(*(row.get("heldout_auroc_ci") or (None, None))),
                      n=int(sum(counts.values())))


def steering_rows(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """`results.json`'s `steering`: one entry per swept (layer, coef), coef 0 being the shared baseline."""
    return [{"layer": int(r["layer"]), "coef": float(r["coef"]), "trait": _finite(r["trait_mean"]),
             "trait_ci": _interval(r["trait_low"], r["trait_high"]), "coherence": _finite(r["coherence_mean"]),
             "coherence_ci": _interval(r["coherence_low"], r["coherence_high"]), "n": int(r["n"])}
            for _, r in summary.sort_values(["layer", "coef"]).iterrows()]


def steering_effect(effects: pd.DataFrame, layer: int) -> dict[str, Any] | None:
    """Trait at the layer's strongest coefficient minus unsteered, with its interval and n."""
    rows = effects[effects["layer"] == layer]
    if rows.empty:
        return None
    r = rows.iloc[0]
    return {"layer": int(r["layer"]), "coef": float(r["coef"]), "effect": _finite(r["effect"]),
            "ci": _interval(r["low"], r["high"]), "n": int(r["n"])}


def chosen_effect(frame: pd.DataFrame, choice: LayerChoice | None) -> dict[str, Any] | None:
    """Trait at the chosen setting minus unsteered, with Welch's interval and n (None without a choice)."""
    if choice is None:
        return None
    cells = frame[frame["layer"] == choice.layer]
    estimate = difference_interval(cells.loc[cells["coef"] == choice.coef, "trait"].tolist(),
                                   cells.loc[cells["coef"] == 0, "trait"].tolist())
    return {"layer": choice.layer, "coef": choice.coef, "effect": _finite(estimate.value),
            "ci": _interval(estimate.low, estimate.high), "n": estimate.n}


def estimate_fields(prefix: str, estimate: Estimate) -> dict[str, Any]:
    return {prefix: _finite(estimate.value), f"{prefix}_ci": _interval(estimate.low, estimate.high),
            f"{prefix}_n": estimate.n}


def write_results(path: Path, results: dict[str, Any]) -> Path:
    return atomic_write_json(path, results)


def collection_summary(collection: Sequence[CollectionLog]) -> dict[str, dict[str, Any]]:
    """Per polarity: mean trait and coherence of the collected answers, with intervals and n."""
    summary: dict[str, dict[str, Any]] = {}
    for lg in collection:
        side = summary.setdefault(str(lg.polarity), {})
        for name, values in (("trait", [a.trait_score for a in lg.answers]),
                             ("coherence", [a.coherence for a in lg.answers])):
            side.update(estimate_fields(name, mean_interval(values)))
        side["answers"] = len(lg.answers)
    return summary


def build_results(*, trait: str, model: str, judge: str, meta: dict[str, Any], layer: int,
                  choice: LayerChoice | None, frame: pd.DataFrame, monitor_r: Estimate,
                  monitor_by_layer: dict[int, Estimate], collection: Sequence[CollectionLog],
                  seconds: float) -> dict[str, Any]:
    """`results.json`: the keys issue 13 lists, plus the rule, the effect and the collection behind them.

    `layer`/`coef` are the sweep's choice (null when nothing met the rule); `monitor_layer` is the layer the
    AUROCs and the monitoring r refer to (the chosen one, else a swept layer).
    """
    summary = summarise(frame)
    aurocs = layer_auroc(meta["diagnostics"], layer)
    return {
        "trait": trait, "model": model, "judge": judge,
        "layer": choice.layer if choice else None, "coef": choice.coef if choice else None,
        "layer_rule": choice.rule if choice else None,
        "monitor_layer": layer,
        "auroc": aurocs.auroc, "auroc_ci": aurocs.auroc_ci, "auroc_text": aurocs.auroc_text,
        "auroc_text_ci": aurocs.auroc_text_ci, "auroc_n": aurocs.n,
        "auroc_test_set": "held-out questions: " + ", ".join(str(q) for q in meta.get("heldout_questions", [])),
        "steering": steering_rows(summary),
        "steering_effect": steering_effect(steering_effects(frame), layer),
        "chosen_effect": chosen_effect(frame, choice),
        "monitor_r": _finite(monitor_r.value), "monitor_r_ci": _interval(monitor_r.low, monitor_r.high),
        "monitor_n": monitor_r.n,
        "monitor_r_by_layer": [{"layer": swept, **estimate_fields("r", r)}
                               for swept, r in sorted(monitor_by_layer.items())],
        "collection": collection_summary(collection),
        "kept": {"pos": meta.get("pos_samples"), "neg": meta.get("neg_samples"), "filter": meta.get("filter"),
                 "threshold": meta.get("threshold"), "coherence_threshold": meta.get("coherence_threshold")},
        "seconds": round(seconds, 1),
    }


def _ci(interval: list[float | None] | None, spec: str) -> str:
    return "no interval" if not interval else f"95% CI {interval[0]:{spec}} to {interval[1]:{spec}}"


def finding_lines(results: dict[str, Any]) -> list[str]:
    """What the run found, in the words the terminal and the run page share."""
    layer = results["monitor_layer"]
    lines = []
    if results["layer"] is None:
        lines.append(f"no layer chosen by the sweep; figures below are for swept layer {layer}")
    else:
        lines.append(f"chosen: layer {results['layer']}, coef {results['coef']:g} ({results['layer_rule']})")
    for key, label in (("auroc", "in context"), ("auroc_text", "text only")):
        value = results[key]
        shown = "n/a" if value is None else f"{value:.2f} ({_ci(results[key + '_ci'], '.2f')})"
        lines.append(f"held-out AUROC at layer {layer}, {label}: {shown}, n = {results['auroc_n']}")
    chosen = results.get("chosen_effect")
    for key in ("chosen_effect", "steering_effect"):
        effect = results.get(key)
        if key == "steering_effect" and chosen is not None and effect is not None and effect["coef"] == chosen["coef"]:
            continue  # the chosen setting is the largest coefficient: one line says it
        if effect is not None and effect["effect"] is not None:
            label = "chosen setting" if key == "chosen_effect" else "largest coefficient"
            lines.append(f"steering effect at layer {layer}, {label}: coef {effect['coef']:g} minus coef 0 = "
                         f"{effect['effect']:+.1f} trait points ({_ci(effect['ci'], '+.1f')}, n = {effect['n']})")
    r = results["monitor_r"]
    shown = "n/a" if r is None else f"{r:+.2f} ({_ci(results['monitor_r_ci'], '+.2f')})"
    lines.append(f"monitoring: Pearson r(last prompt token projection, trait score) = {shown}, "
                 f"n = {results['monitor_n']}")
    others = [e for e in results.get("monitor_r_by_layer", []) if e["layer"] != layer and e["r"] is not None]
    if others:
        lines.append("monitoring r at the other swept layers: " + ", ".join(
            f"layer {e['layer']} {e['r']:+.2f} ({_ci(e['r_ci'], '+.2f')})" for e in others))
    return lines


def example_answers(sweep_log: str | Path, per_setting: int = 1) -> list[dict[str, Any]]:
    """The first question's answers in every swept setting, for the run page (shortened)."""
    from pv_harness.logs import judged_samples

    examples: dict[tuple, dict[str, Any]] = {}
    for judged in judged_samples(sweep_log):
        sample = judged.sample
        m = sample.metadata or {}
        key = (m.get("layer") if m.get("layer") is not None else -1, float(m.get("coef", 0.0)))
        if m.get("question_id") != 0 or sample.epoch > per_setting or key in examples:
            continue
        text = sample.output.completion if sample.output else ""
        examples[key] = {"setting": m.get("setting"), "question": m.get("question"),
                         "answer": text[:EXAMPLE_CHARS] + ("..." if len(text) > EXAMPLE_CHARS else ""),
                         "trait": judged.trait_score, "coherence": judged.coherence}
    return [examples[k] for k in sorted(examples)]
