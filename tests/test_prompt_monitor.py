"""`pv_harness/prompt_monitor`, the last-prompt-token experiment: samples, options, and end to end on the tiny
pv/ model through inspect with a replaced trait judge, writing the page and the CSV; r and its interval by hand."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import pytest
import torch
from inspect_ai import eval as inspect_eval
from inspect_ai._util.error import PrerequisiteError
from inspect_ai.model import ChatMessageSystem
from inspect_ai.scorer import Score, Target, scorer
from pv_harness.scorers.testing import grader_output, mock_grader, mock_subject, replacing_trait_judge
from pv_harness.tasks.persona import system_prompt
from pv_harness.tasks.prompt_monitor import prompt_monitor, prompt_monitor_samples
from safetensors.torch import save_file

from pv_harness import plugin_manager
from pv_harness.reports.monitor import write_monitor_csv, write_prompt_monitor_report

TRAIT_BY_STRENGTH = {"pos": 80.0, "neg": 20.0, "none": 50.0}
T2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # Student t 0.975 quantile at 2 degrees of freedom


@scorer(metrics=[])
def strength_judge() -> object:
    """Trait score by system prompt, plus the question id: exact, varied values to correlate with."""

    async def score(state, target: Target) -> Score:
        meta = state.metadata
        return Score(value=TRAIT_BY_STRENGTH[meta["strength"]] + meta["question_id"])

    return score


@pytest.fixture
def replaced_judge():
    with replacing_trait_judge("evil", strength_judge, "strength_judge"):
        yield


@pytest.fixture
def vector_file(tmp_path: Path) -> Path:
    path = tmp_path / "evil.safetensors"
    save_file({"response_avg_diff": torch.randn(5, 64, generator=torch.Generator().manual_seed(3))}, str(path))
    return path


def coherent():
    return mock_grader(lambda prompt, config: grader_output(top_logprobs=[("80", 0.0)]))


def test_samples_pair_each_question_with_pos_neg_and_no_system_prompt() -> None:
    trait = plugin_manager.get_trait("evil")
    samples = prompt_monitor_samples(trait, 7)
    pairs = len(trait.instructions)
    assert [s.id for s in samples[:3]] == ["evil_0_pos", "evil_0_neg", "evil_0_none"] and len(samples) == 21
    question = trait.questions("eval")[6]
    pos, neg, none = samples[18:21]
    pair = trait.instructions[6 % pairs]
    assert pos.metadata == {"trait": "evil", "version": "eval", "question_id": 6, "question": question,
                            "instruction_id": 6 % pairs, "strength": "pos",
                            "system_prompt": system_prompt(trait.assistant_name("pos"), pair.pos)}
    assert neg.metadata["system_prompt"] == system_prompt("helpful", pair.neg) == neg.input[0].content
    assert isinstance(pos.input[0], ChatMessageSystem) and pos.input[1].content == question
    assert none.input == question and none.metadata["instruction_id"] is None and none.metadata["system_prompt"] is None
    assert len(prompt_monitor_samples(trait)) == 3 * len(trait.questions("eval"))


@pytest.mark.parametrize(("options", "message"), [
    ({"layer": 2}, "prompt_monitor needs -T vector=PATH"),
    ({"vector": "/no/such.safetensors", "layer": 2}, "vector: no such file"),
    ({"vector": "VEC"}, "prompt_monitor needs -T layer=L"),
    ({"vector": "VEC", "layer": "deep"}, "layer must be a non-negative integer"),
    ({"vector": "VEC", "layer": -1}, "layer must be a non-negative integer"),
    ({"vector": "VEC", "layer": 2, "questions": 0}, "questions must be a positive integer"),
    ({"vector": "VEC", "layer": 2, "judge_min_mass": 2}, "judge_min_mass must be between 0 and 1"),
])
def test_bad_options_are_refused_by_name(options: dict, message: str, vector_file: Path) -> None:
    options = {k: (str(vector_file) if v == "VEC" else v) for k, v in options.items()}
    with pytest.raises(PrerequisiteError) as info:
        prompt_monitor(trait="evil", **options)
    assert message in str(info.value.message)


def test_a_model_that_cannot_be_monitored_fails_before_generation(vector_file: Path) -> None:
    calls: list = []
    (log,) = inspect_eval(prompt_monitor(trait="evil", vector=str(vector_file), layer=2, questions=1),
                          model=mock_subject(calls=calls), model_roles={"grader": coherent()}, display="none")
    assert log.status == "error" and "prompt_monitor reads the model's activations" in log.error.message
    assert calls == []


def test_prompt_monitor_end_to_end(replaced_judge, tiny_model_dir: Path, vector_file: Path, tmp_path: Path) -> None:
    (log,) = inspect_eval("pv_harness/prompt_monitor",
                          task_args={"trait": "evil", "vector": str(vector_file), "layer": "2", "questions": 3,
                                     "max_tokens": 4, "temperature": 0},
                          model=f"pv/{tiny_model_dir}", model_roles={"grader": coherent()}, log_dir=str(tmp_path),
                          display="none")
    assert log.status == "success", log.error
    assert log.eval.metadata["pv_task"] == "prompt_monitor" and log.eval.metadata["layer"] == 2
    samples = sorted(log.samples, key=lambda s: s.id)
    assert len(samples) == 9
    monitor = {"pv": {"monitor": [{"vector": str(vector_file.resolve()), "layer": 2}]}}
    for sample in samples:
        (event,) = [e for e in sample.events if e.event == "model" and e.role is None]
        assert event.config.extra_body == monitor
    last = {s.id: s.output.metadata["pv_monitor"][0]["prompt_last"] for s in samples}
    trait = {s.id: TRAIT_BY_STRENGTH[s.metadata["strength"]] + s.metadata["question_id"] for s in samples}
    assert len({last[f"evil_0_{strength}"] for strength in ("pos", "neg", "none")}) == 3  # the prompt moves it

    page_path, r = write_prompt_monitor_report(log.location, tmp_path / "pm.html")
    ids = sorted(last)
    xs, ys = [last[i] for i in ids], [trait[i] for i in ids]
    hand = statistics.correlation(xs, ys)
    half = 1.959963984540054 / math.sqrt(9 - 3)
    assert r.value == pytest.approx(hand, abs=1e-12) and r.n == 9 and r.method == "Fisher z"
    assert r.low == pytest.approx(math.tanh(math.atanh(hand) - half), abs=1e-12)
    assert r.high == pytest.approx(math.tanh(math.atanh(hand) + half), abs=1e-12)
    page = page_path.read_text()
    assert (f"<b>Pearson r (last prompt token vs trait score): {hand:+.2f}</b> (95% CI {r.low:+.2f} to "
            f"{r.high:+.2f},\nFisher's z), n = 9 scored answers.") in page
    pos = [last[f"evil_{q}_pos"] for q in range(3)]
    mean, sd = statistics.fmean(pos), statistics.stdev(pos)
    assert (f"<tr><td>pos</td><td>3</td><td>{mean:+.3f}</td>\n<td>{mean - T2 * sd / math.sqrt(3):+.3f} to "
            f"{mean + T2 * sd / math.sqrt(3):+.3f}</td></tr>") in page
    assert page.count('<div class="sample">') == 9 and "<h3>none system prompt</h3>" in page
    assert "none system prompt" in page and (tmp_path / "plotly.min.js").exists()

    rows = list(csv.DictReader(write_monitor_csv(log.location, tmp_path / "pm.csv").open()))
    assert list(rows[0]) == ["sample", "epoch", "strength", "question_id", "prompt_last", "response_mean", "trait",
                             "coherence"]
    assert sorted((row["sample"], row["strength"], float(row["trait"]), float(row["coherence"])) for row in rows) == \
        sorted((i, i.rsplit("_", 1)[1], trait[i], 80.0) for i in ids)
    assert all(float(row["prompt_last"]) == last[row["sample"]] and row["epoch"] == "1" for row in rows)


def test_the_report_refuses_other_logs(tiny_model_dir: Path, tmp_path: Path) -> None:
    from pv_harness.tasks.persona import trait_eval

    (log,) = inspect_eval(trait_eval(trait="evil", n_per_question=1, max_tokens=2), model=mock_subject("hi"),
                          model_roles={"grader": coherent()}, limit=1, log_dir=str(tmp_path), display="none")
    with pytest.raises(ValueError, match="is not a prompt_monitor log"):
        write_prompt_monitor_report(log.location, tmp_path / "x.html")
