"""The sweep's statistics: t intervals per setting, the relative coherence floor, steering effects, the CSV and
the page (which names only swept layers, and says which rule failed when none qualifies); a negative coefficient
end to end on the tiny model."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from inspect_ai import eval as inspect_eval
from inspect_ai.log import EvalConfig, EvalDataset, EvalLog, EvalSample, EvalSpec, write_eval_log
from inspect_ai.model import ModelOutput
from inspect_ai.scorer import Score
from pv_harness.scorers.testing import grader_output, mock_grader
from pv_harness.tasks.steering_sweep import steering_sweep
from safetensors.torch import save_file

from pv_harness.estimates import difference_interval, t_quantile
from pv_harness.reports.sweep import (
    choose_layer,
    steering_effects,
    summarise,
    sweep_frame,
    why_none,
    write_sweep_csv,
    write_sweep_report,
)

T1 = math.tan(0.475 * math.pi)  # Student t 0.975 quantile at 1 degree of freedom
T2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # ... and at 2


def frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["layer", "coef", "trait", "coherence"])


# baseline coherence 90 at both layers (they share it in a real sweep)
GRID = frame([
    (10, 0.0, 5.0, 90.0), (10, 0.0, 15.0, 90.0),
    (10, 2.0, 60.0, 80.0), (10, 2.0, 60.0, 80.0),
    (10, 4.0, 95.0, 70.0), (10, 4.0, 95.0, 70.0),
    (20, 0.0, 5.0, 90.0), (20, 0.0, 15.0, 90.0),
    (20, 2.0, 70.0, 73.0), (20, 2.0, 70.0, 73.0),
])


def test_summary_intervals_are_t_intervals_by_hand() -> None:
    summary = summarise(frame([(1, 2.0, 10.0, 50.0), (1, 2.0, 30.0, 70.0), (1, 2.0, math.nan, 60.0),
                               (1, 0.0, 40.0, 80.0)]))
    row = summary[summary["coef"] == 2.0].iloc[0]
    # trait: 10 and 30 (the NaN is unscored): mean 20, sd sqrt(200), df 1
    assert (row["trait_mean"], row["n"], row["unscored"]) == (20.0, 2, 1)
    assert row["trait_low"] == pytest.approx(20 - T1 * math.sqrt(200) / math.sqrt(2), rel=1e-12)
    assert row["trait_high"] == pytest.approx(20 + T1 * math.sqrt(200) / math.sqrt(2), rel=1e-12)
    # coherence: 50, 70, 60: mean 60, sd 10, df 2
    assert (row["coherence_mean"], row["coherence_n"]) == (60.0, 3)
    assert row["coherence_low"] == pytest.approx(60 - T2 * 10 / math.sqrt(3), rel=1e-12)
    alone = summary[summary["coef"] == 0.0].iloc[0]
    assert alone["n"] == 1 and math.isnan(alone["trait_low"])  # one answer: a mean, no interval


def test_the_relative_floor_picks_and_rejects() -> None:
    summary = summarise(GRID)
    # absolute 75: layer 10 coef 2 (80) qualifies, layer 20 coef 2 (73) does not
    assert tuple(choose_layer(summary, 75)[["layer", "coef"]]) == (10, 2.0)
    # 0.8 x 90 = 72: layer 20 coef 2 (trait 70, coherence 73) now beats layer 10 coef 2 (trait 60)
    assert tuple(choose_layer(summary, 0.8, relative=True)[["layer", "coef"]]) == (20, 2.0)
    # 0.75 x 90 = 67.5: layer 10 coef 4 (coherence 70, trait 95) qualifies too and wins
    assert tuple(choose_layer(summary, 0.75, relative=True)[["layer", "coef"]]) == (10, 4.0)
    # 0.9 x 90 = 81: nothing steered is that coherent
    assert choose_layer(summary, 0.9, relative=True) is None
    assert why_none(summary, 0.9, relative=True) == (
        "no positive coefficient met the coherence floor (the highest mean trait score among positive coefficients "
        "with mean coherence >= 0.9 x the unsteered baseline's mean coherence (90.0, n=2, so >= 81.0)); the most "
        "coherent was layer 10 coef 2 at 80.0")
    with pytest.raises(ValueError, match=r"0 < floor <= 1, e.g. 0.8\); got 75"):
        choose_layer(summary, 75, relative=True)


def test_a_relative_floor_without_a_baseline_chooses_nothing() -> None:
    summary = summarise(frame([(10, 2.0, 60.0, 80.0), (10, 4.0, 90.0, 85.0)]))
    assert choose_layer(summary, 0.5, relative=True) is None
    assert why_none(summary, 0.5, relative=True) == ("a relative coherence floor needs the unsteered baseline "
                                                     "(coef 0), which this sweep did not run")
    assert tuple(choose_layer(summary, 50)[["layer", "coef"]]) == (10, 4.0)


def test_steering_effect_is_welch_by_hand() -> None:
    effects = steering_effects(GRID).set_index("layer")
    # layer 10: coef 4 (95, 95) minus coef 0 (5, 15): 85; variances 0 and 50, each over 2: se 5, Welch df 1
    assert effects.loc[10, "coef"] == 4.0 and effects.loc[10, "effect"] == 85.0 and effects.loc[10, "n"] == 4
    assert effects.loc[10, "low"] == pytest.approx(85 - T1 * 5, rel=1e-12)
    assert effects.loc[10, "high"] == pytest.approx(85 + T1 * 5, rel=1e-12)
    assert effects.loc[20, "effect"] == 60.0
    # a suppression sweep measures its most negative coefficient
    negative = steering_effects(frame([(5, -4.0, 1.0, 90.0), (5, -4.0, 3.0, 90.0), (5, -2.0, 9.0, 90.0),
                                       (5, 0.0, 10.0, 90.0), (5, 0.0, 14.0, 90.0)])).iloc[0]
    expected = difference_interval([1.0, 3.0], [10.0, 14.0])  # variances 2 and 8: df = 25 / (1 + 16) = 25/17
    assert (negative["coef"], negative["effect"]) == (-4.0, -10.0)
    assert negative["low"] == pytest.approx(-10 - t_quantile(0.975, 25 / 17) * math.sqrt(5), rel=1e-12)
    assert negative["low"] == expected.low


def test_sweep_csv_one_row_per_setting(tmp_path: Path) -> None:
    path = write_sweep_csv(GRID, tmp_path / "sweep.csv")
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["layer", "coef", "n", "trait_mean", "trait_low", "trait_high", "coherence_n",
                             "coherence_mean", "coherence_low", "coherence_high"]
    assert [(r["layer"], r["coef"], r["n"]) for r in rows] == [("10", "0.0", "2"), ("10", "2.0", "2"),
                                                              ("10", "4.0", "2"), ("20", "0.0", "2"),
                                                              ("20", "2.0", "2")]
    assert float(rows[0]["trait_low"]) == pytest.approx(10 - T1 * 5, rel=1e-12)  # 5 and 15: sd sqrt(50) / sqrt(2)
    assert rows[1]["trait_low"] == rows[1]["trait_mean"] == "60.0"  # two equal scores: a zero-width interval
    assert write_sweep_csv(summarise(GRID), tmp_path / "again.csv").read_text() == path.read_text()


def sweep_log(path: Path, cells: list[tuple], layers: list[int]) -> Path:
    """A steering_sweep log as the task writes it: baselines (layer None) and steered samples, judged."""
    samples = []
    for i, (layer, coef, trait, coherence) in enumerate(cells):
        samples.append(EvalSample(
            id=i, epoch=1, input="q", target="", output=ModelOutput.from_content("pv/tiny", "an answer"),
            metadata={"layer": layer, "coef": coef, "question_id": i},
            scores={"trait_judge": Score(value=trait), "coherence_judge": Score(value=coherence)}))
    spec = EvalSpec(created="2025-01-01T00:00:00", task="steering_sweep", model="pv/tiny", config=EvalConfig(),
                    dataset=EvalDataset(samples=len(samples), sample_ids=[s.id for s in samples]),
                    metadata={"pv_task": "steering_sweep", "trait": "evil", "layers": layers, "vector": ""})
    write_eval_log(EvalLog(status="success", eval=spec, samples=samples), str(path))
    return path


CELLS = [(None, 0.0, 5.0, 90.0), (None, 0.0, 15.0, 90.0), (7, 2.0, 60.0, 80.0), (7, 2.0, 62.0, 78.0),
         (9, 2.0, 70.0, 73.0), (9, 2.0, 72.0, 75.0)]


def named_layers(page: str) -> set[int]:
    text = re.sub(r"<script.*?</script>", "", page, flags=re.S)  # the figure's data, not prose
    return {int(n) for n in re.findall(r"[Ll]ayer:? (\d+)", text)}


def test_sweep_page_states_the_rule_and_the_choice(tmp_path: Path) -> None:
    log = sweep_log(tmp_path / "s.eval", CELLS, [7, 9])
    out, choice, _ = write_sweep_report(log, tmp_path / "s.html", floor=0.8, relative=True)
    assert (choice.layer, choice.coef, choice.coherence_floor) == (9, 2.0, 72.0)
    assert choice.rule.endswith(
        "mean coherence >= 0.8 x the unsteered baseline's mean coherence (90.0, n=2, so >= 72.0)")
    page = out.read_text()
    assert "Rule: the highest mean trait score among positive coefficients with mean coherence &gt;= 0.8 x" in page
    assert "<b>Chosen layer: 9</b> (coef 2: trait 71.0,\ncoherence 74.0 &ge; 72.0)" in page
    assert "<tr><td>7</td><td>2</td><td>+51.0</td>" in page  # the effect at layer 7: 61 - 10
    assert named_layers(page) == {9}  # in prose only the chosen layer; never one the sweep did not try


def test_sweep_page_without_a_choice_says_which_rule_failed(tmp_path: Path) -> None:
    log = sweep_log(tmp_path / "s.eval", CELLS, [7, 9])
    out, choice, choice_path = write_sweep_report(log, tmp_path / "s.html", floor=85)
    assert choice is None and choice_path is None
    page = out.read_text()
    assert ("<b>No layer chosen</b>: no positive coefficient met the coherence floor (the highest mean trait score "
            "among positive coefficients with mean coherence &gt;= 85); the most coherent was layer 7 coef 2 at "
            "79.0.") in page
    assert named_layers(page) == {7}


# --- a negative coefficient end to end ------------------------------------------------------------------------


def test_a_negative_coefficient_steers_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    vector = tmp_path / "evil.safetensors"
    save_file({"response_avg_diff": torch.randn(5, 64, generator=torch.Generator().manual_seed(1))}, str(vector))
    grader = mock_grader(lambda prompt, config: grader_output(top_logprobs=[("80", 0.0)]))
    (log,) = inspect_eval(steering_sweep(trait="evil", vector=str(vector), layers="2", coefs="-8,0,8", questions=1,
                                         max_tokens=6, temperature=0),
                          model=f"pv/{tiny_model_dir}", model_roles={"grader": grader}, log_dir=str(tmp_path),
                          display="none")
    assert log.status == "success", log.error
    answers = {s.metadata["coef"]: s for s in log.samples}
    assert sorted(answers) == [-8.0, 0.0, 8.0] and answers[-8.0].metadata["setting"] == "L2 c-8"
    (event,) = [e for e in answers[-8.0].events if e.event == "model" and e.role is None]
    assert event.config.extra_body["pv"]["steer"][0]["coef"] == -8.0
    completions = {coef: s.output.completion for coef, s in answers.items()}
    assert len(set(completions.values())) == 3  # greedy: -8, unsteered and +8 all differ
    assert "L2 c-8_mean" in log.results.scores[0].metrics
    frame, _ = sweep_frame(log.location)
    assert sorted(frame["coef"]) == [-8.0, 0.0, 8.0]
    assert steering_effects(frame).iloc[0]["coef"] == 8.0  # a tie in size: the positive one


def test_a_negative_coefficient_is_never_chosen_and_the_effect_is_the_largest_coefficients() -> None:
    """Suppressing the trait is not expressing it: a layer is chosen by its positive coefficients only."""
    frame = pd.DataFrame([
        # layer, coef, trait, coherence: coef -2 scores highest and is coherent, but steers away from the trait
        (10, -2.0, 99.0, 90.0), (10, 0.0, 20.0, 90.0), (10, 1.0, 40.0, 85.0), (10, 2.0, 60.0, 30.0),
        (10, -2.0, 97.0, 90.0), (10, 0.0, 22.0, 90.0), (10, 1.0, 44.0, 85.0), (10, 2.0, 64.0, 30.0),
    ], columns=["layer", "coef", "trait", "coherence"])
    best = choose_layer(summarise(frame), 0.5, relative=True)
    assert (best["layer"], best["coef"]) == (10, 1.0)
    effect = steering_effects(frame).iloc[0]
    assert (effect["coef"], effect["effect"], effect["n"]) == (2.0, 41.0, 4)
