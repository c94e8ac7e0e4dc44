"""`results.json` from the pieces of a run: the figures, their n and intervals, and only layers that were swept."""

from __future__ import annotations

import pandas as pd

from pv_harness.estimates import correlation, difference_interval
from pv_harness.reports.results import build_results, finding_lines
from pv_harness.reports.sweep import LayerChoice


def sweep() -> pd.DataFrame:
    rows = [(layer, coef, q, trait) for layer in (10, 20) for q in range(3)
            for coef, trait in ((-2.0, 5.0 + q), (0.0, 20.0 + 2 * q), (1.0, 50.0 + 3 * q), (2.0, 90.0 - q))]
    frame = pd.DataFrame(rows, columns=["layer", "coef", "question_id", "trait"])
    frame["epoch"], frame["coherence"] = 1, 10.0
    return frame


def results(choice: LayerChoice | None, layer: int) -> dict:
    diagnostics = [{"layer": lyr, "heldout_auroc": 0.8, "heldout_auroc_ci": [0.6, 1.0], "heldout_auroc_context": 0.9,
                    "heldout_auroc_context_ci": [0.7, 1.0], "heldout_n": {"pos": 20, "neg": 20}} for lyr in range(31)]
    r = correlation([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 1.0, 4.0, 3.0, 6.0])
    return build_results(trait="evil", model="pv/m", judge="pv/m (likelihood)", meta={"diagnostics": diagnostics},
                         layer=layer, choice=choice, frame=sweep(), monitor_r=r, monitor_by_layer={layer: r},
                         collection=[], seconds=1.23)


def test_results_carry_the_chosen_setting_and_both_effects_with_intervals() -> None:
    choice = LayerChoice(layer=20, coef=1.0, trait_mean=53.0, coherence_mean=10.0, coherence_floor=5.0, trait="evil",
                         vector="", log="", rule="the rule")
    out = results(choice, 20)
    assert (out["layer"], out["coef"], out["monitor_layer"], out["layer_rule"]) == (20, 1.0, 20, "the rule")
    assert (out["auroc"], out["auroc_text"], out["auroc_n"]) == (0.9, 0.8, 40)
    chosen = difference_interval([50.0, 53.0, 56.0], [20.0, 22.0, 24.0])
    assert out["chosen_effect"] == {"layer": 20, "coef": 1.0, "effect": chosen.value, "ci": [chosen.low, chosen.high],
                                    "n": 6}
    largest = difference_interval([90.0, 89.0, 88.0], [20.0, 22.0, 24.0])
    assert out["steering_effect"]["coef"] == 2.0 and out["steering_effect"]["effect"] == largest.value
    assert {(s["layer"], s["coef"]) for s in out["steering"]} == {(lyr, c) for lyr in (10, 20)
                                                                  for c in (-2.0, 0.0, 1.0, 2.0)}
    assert all(s["n"] == 3 for s in out["steering"]) and out["seconds"] == 1.2
    lines = finding_lines(out)
    assert lines[0] == "chosen: layer 20, coef 1 (the rule)"
    assert f"steering effect at layer 20, chosen setting: coef 1 minus coef 0 = {chosen.value:+.1f}" in lines[3]
    assert lines[4].startswith("steering effect at layer 20, largest coefficient: coef 2 minus coef 0 = +67.0")


def test_without_a_choice_results_name_no_layer_and_say_which_was_monitored() -> None:
    out = results(None, 10)
    assert out["layer"] is None and out["coef"] is None and out["chosen_effect"] is None
    assert out["monitor_layer"] == 10  # a swept layer
    assert finding_lines(out)[0] == "no layer chosen by the sweep; figures below are for swept layer 10"
    assert {s["layer"] for s in out["steering"]} == {10, 20}
