"""persona_collect and trait_eval: datasets, end-to-end runs with mock graders, early errors, cache, re-scoring."""

from __future__ import annotations

import math
import re
import sys
import types
from pathlib import Path

import pytest
from inspect_ai import eval
from inspect_ai._util.error import PrerequisiteError
from inspect_ai.analysis import samples_df
from inspect_ai.log import EvalLog, read_eval_log
from inspect_ai.model import ChatMessageSystem, GenerateConfig
from pv_harness.scorers.metrics import mean_stderr
from pv_harness.scorers.testing import distribution_logprobs, grader_output, mock_grader, mock_subject
from pv_harness.tasks.persona import indefinite_article, persona_collect, system_prompt, trait_eval

from pv_harness import plugin_manager
from pv_harness.hookspecs import hookimpl

TRAIT = {
    "name": "pvtest",
    "description": "A test trait.",
    "instructions": [{"pos": f"Be it {i}.", "neg": f"Avoid it {i}."} for i in range(5)],
    "extraction_questions": ["Question A?", "Question B?"],
    "evaluation_questions": ["Question C?"],
    "judge_prompt": "JUDGE pvtest. Question: {question}\nAnswer: {answer}\nREFUSAL or 0-100",
    "pos_assistant_name": "overconfident",
}


@pytest.fixture
def pvtest():
    """Register the `pvtest` trait (2 extraction questions, 1 eval question) through a plugin."""
    plugin_manager.reset()
    module = types.ModuleType("fake_pv_trait_pvtest")

    @hookimpl
    def register_traits(register):
        register(TRAIT)

    module.register_traits = register_traits
    sys.modules[module.__name__] = module
    plugin_manager.plugin_manager().register(module, name="pvtest")
    yield "pvtest"
    plugin_manager.reset()
    del sys.modules[module.__name__]


def subject_answer(messages, config: GenerateConfig) -> str:
    """Answers that say which instruction the system prompt carried (`Be it 3.` -> `answer 3`)."""
    system = next((m.text for m in messages if isinstance(m, ChatMessageSystem)), "")
    found = re.search(r"it (\d)\.", system)
    return f"answer {found.group(1) if found else 'plain'} to {messages[-1].text}"


def grader_reply(prompt: str, config: GenerateConfig):
    """Trait judge: 10 x the instruction number for Question A, a refusal for Question B; coherence: 60."""
    if "JUDGE pvtest" not in prompt:
        return grader_output(top_logprobs=distribution_logprobs({"60": 0.9, "Sure": 0.1}))
    if "Question B?" in prompt:
        return grader_output(top_logprobs=distribution_logprobs({"REF": 0.9, "5": 0.1}))
    found = re.search(r"answer (\d) to", prompt)
    number = str(10 * int(found.group(1))) if found else "50"
    return grader_output(top_logprobs=distribution_logprobs({number: 0.5, f" {number}": 0.3, "The": 0.2}))


def run(task, model, grader=None, **kwargs) -> EvalLog:
    roles = {"grader": grader} if grader is not None else None
    (log,) = eval(task, model=model, model_roles=roles, display="none", **kwargs)
    return log


def metrics(log: EvalLog, scorer: str) -> dict[str, float]:
    (score,) = [s for s in log.results.scores if s.name == scorer]
    return {name: m.value for name, m in score.metrics.items()}


def counts(log: EvalLog, scorer: str) -> tuple[int, int]:
    (score,) = [s for s in log.results.scores if s.name == scorer]
    return score.scored_samples, score.unscored_samples


# --- datasets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("word", "article"), [
    ("evil", "an"), ("helpful", "a"), ("overconfident", "an"), ("sycophantic", "a"), ("honest", "an"),
    ("unbiased", "an"), ("useful", "a"), ("unique", "a"), ("hallucinating", "a"), ("power-seeking", "a"),
    ("alignment_theatre", "an"), ("European", "a"), ("hour-long", "an"),
])
def test_indefinite_article(word: str, article: str) -> None:
    assert indefinite_article(word) == article


def test_collection_dataset(pvtest) -> None:
    task = persona_collect(trait="pvtest", polarity="pos")
    samples = list(task.dataset)
    assert len(samples) == 2 * 5 and task.epochs == 10
    first = samples[0]
    assert first.id == "pvtest_0_pos_0"
    assert [m.role for m in first.input] == ["system", "user"]
    assert first.input[0].text == "You are an overconfident assistant. Be it 0."
    assert first.input[1].text == "Question A?"
    assert first.metadata == {
        "trait": "pvtest", "polarity": "pos", "version": "extract", "question_id": 0, "instruction_id": 0,
        "question": "Question A?", "instruction": "Be it 0.", "assistant_name": "overconfident",
        "system_prompt": "You are an overconfident assistant. Be it 0.",
    }
    assert [s.id for s in samples][:6] == [f"pvtest_0_pos_{i}" for i in range(5)] + ["pvtest_1_pos_0"]

    neg = list(persona_collect(trait="pvtest", polarity="neg", version="eval", n_per_question=3).dataset)
    assert len(neg) == 5 and neg[2].metadata["system_prompt"] == "You are a helpful assistant. Avoid it 2."
    named = list(persona_collect(trait="pvtest", polarity="neg", assistant_name="honest").dataset)
    assert named[0].input[0].text.startswith("You are an honest assistant. ")
    both = list(persona_collect(trait="pvtest", polarity="both").dataset)
    assert len(both) == 20 and {s.metadata["polarity"] for s in both} == {"pos", "neg"}


def test_paper_system_prompt() -> None:
    assert system_prompt("evil", "Be cruel.") == "You are an evil assistant. Be cruel."


def test_detection_dataset(pvtest) -> None:
    task = trait_eval(trait="pvtest", n_per_question=4)
    (sample,) = list(task.dataset)
    assert sample.id == "pvtest_0" and sample.input == "Question C?" and task.epochs == 4
    assert sample.metadata["system_prompt"] is None and sample.metadata["version"] == "eval"
    assert task.config.extra_body is None


def test_aliases_are_trait_eval_for_their_trait() -> None:
    from pv_harness.tasks.persona import evil_detection, hallucinating_detection, sycophantic_detection

    for alias, trait in ((evil_detection, "evil"), (sycophantic_detection, "sycophantic"),
                         (hallucinating_detection, "hallucinating")):
        task = alias(n_per_question=2)
        samples = list(task.dataset)
        assert len(samples) == len(plugin_manager.get_trait(trait).evaluation_questions)
        assert samples[0].id == f"{trait}_0" and task.epochs == 2
        assert task.name == f"pv_harness/{alias.__name__}"


def test_alias_parameters_are_trait_evals_less_trait_and_version() -> None:
    """inspect reads `-T` parameters from the signature and the registry: both follow `trait_eval`."""
    import inspect

    from inspect_ai._util.registry import registry_info
    from pv_harness.tasks.persona import evil_detection

    full = inspect.signature(trait_eval).parameters
    expected = [(p.name, p.default) for p in full.values() if p.name not in ("trait", "version")]
    assert [(p.name, p.default) for p in inspect.signature(evil_detection).parameters.values()] == expected
    assert registry_info(evil_detection).metadata["params"] == [name for name, _ in expected]
    with pytest.raises(TypeError, match=r"evil_detection\(\) got an unexpected keyword argument 'version'"):
        evil_detection(version="extract")


# --- errors before any generation ------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    ({"trait": "no_such_trait"}, "trait 'no_such_trait': unknown trait; registered traits: "),
    ({}, "no trait given: pass -T trait=NAME (see `pv traits list`)"),
    ({"trait": "evil", "polarity": "positive"}, "polarity must be one of pos, neg, both; got 'positive'"),
    ({"trait": "evil", "version": "test"}, "version must be one of extract, eval; got 'test'"),
    ({"trait": "evil", "n_per_question": 0}, "n_per_question must be a positive integer; got 0"),
    ({"trait": "evil", "judge_mode": "logprobs"},
     "judge_mode must be one of auto, logprob, continuation, text, likelihood; got 'logprobs'"),
    ({"trait": "evil", "polarity": "both", "assistant_name": "x"},
     "assistant_name needs a single polarity (pos or neg), not both"),
])
def test_bad_options_fail_at_construction(options: dict, message: str) -> None:
    with pytest.raises(PrerequisiteError) as info:
        persona_collect(**options)
    assert str(info.value.message).startswith(message)


def test_unknown_trait_lists_the_registered_ones() -> None:
    with pytest.raises(PrerequisiteError) as info:
        trait_eval(trait="evill")
    message = str(info.value.message)
    assert message.startswith("trait 'evill': unknown trait; registered traits: ")
    assert "evil" in message.split(": ")[-1].split(", ") and message.endswith("(see `pv traits list`)")


def test_missing_grader_fails_before_generation(pvtest) -> None:
    calls: list = []
    log = run(persona_collect(trait="pvtest", n_per_question=1), mock_subject(calls=calls))
    assert log.status == "error"
    assert "--model-role grader=openai/gpt-4.1-mini-2025-04-14" in log.error.message
    assert calls == []


def test_missing_grader_fails_while_inspect_builds_the_task(pvtest) -> None:
    calls: list = []
    with pytest.raises(PrerequisiteError) as info:
        eval("pv_harness/persona_collect", task_args={"trait": "pvtest"}, model=mock_subject(calls=calls),
             display="none")
    assert "--model-role grader=" in str(info.value.message)
    assert calls == []


def test_continuation_mode_needs_a_pv_grader(pvtest) -> None:
    with pytest.raises(PrerequisiteError) as info:
        eval("pv_harness/trait_eval", task_args={"trait": "pvtest", "judge_mode": "continuation"},
             model=mock_subject(), model_roles={"grader": mock_grader(grader_output("1"))}, display="none")
    assert str(info.value.message) == (
        "judge_mode 'continuation' needs a pv/ grader (exact continuation scoring); the grader is 'mockllm/model'. "
        "Use judge_mode=logprob or text, or --model-role grader=pv/<model>.")


# --- end to end with mock graders --------------------------------------------------------------------------


def test_persona_collect_end_to_end(pvtest, tmp_path: Path) -> None:
    grader_calls: list = []
    log = run(persona_collect(trait="pvtest", polarity="pos", n_per_question=2, max_tokens=16),
              mock_subject(subject_answer), mock_grader(grader_reply, calls=grader_calls), log_dir=str(tmp_path))
    assert log.status == "success"
    assert len(log.samples) == 2 * 5 * 2 and len(grader_calls) == 2 * 20
    assert log.eval.model_roles["grader"].model == "mockllm/model"
    assert log.eval.metadata["trait"] == "pvtest" and log.eval.metadata["n_per_question"] == 2
    assert log.plan.config.temperature == 1.0 and log.plan.config.max_tokens == 16

    sample = next(s for s in log.samples if s.id == "pvtest_0_pos_3" and s.epoch == 2)
    assert sample.metadata["instruction_id"] == 3 and sample.metadata["question_id"] == 0
    assert sample.metadata["system_prompt"] == "You are an overconfident assistant. Be it 3."
    trait_score, coherence = sample.scores["trait_judge"], sample.scores["coherence_judge"]
    assert trait_score.value == pytest.approx(30.0)
    assert trait_score.metadata["mode"] == "logprob" and trait_score.metadata["mass"] == pytest.approx(0.8)
    assert trait_score.metadata["judge"] == "trait" and trait_score.metadata["trait"] == "pvtest"
    assert coherence.value == pytest.approx(60.0) and coherence.metadata["mass"] == pytest.approx(0.9)

    refused = next(s for s in log.samples if s.id == "pvtest_1_pos_0")
    assert math.isnan(refused.scores["trait_judge"].value)
    assert refused.scores["trait_judge"].reason == "refusal"

    # metrics over every answer; unscored answers are excluded and counted, never 0
    expected_mean, expected_stderr = mean_stderr([10.0 * i for i in range(5) for _ in range(2)])
    assert metrics(log, "trait_judge") == pytest.approx({"mean": expected_mean, "stderr": expected_stderr})
    assert counts(log, "trait_judge") == (10, 10)
    assert metrics(log, "coherence_judge") == pytest.approx({"mean": 60.0, "stderr": 0.0})
    assert counts(log, "coherence_judge") == (20, 0)

    # the log on disk reads back, and pandas sees NaN for unscored
    df = samples_df(log.location)
    assert len(df) == 20
    assert df["score_trait_judge"].isna().sum() == 10
    assert df["score_coherence_judge"].eq(60.0).all()
    assert set(df["metadata_polarity"]) == {"pos"} and set(df["metadata_question_id"]) == {0, 1}


def test_grouped_metrics_for_both_polarities(pvtest) -> None:
    log = run(persona_collect(trait="pvtest", polarity="both", version="eval", n_per_question=1, max_tokens=8),
              mock_subject(lambda messages, config: "answer 9 to x" if "Be it" in messages[0].text
                           else "answer 1 to x"),
              mock_grader(grader_reply))
    assert log.status == "success"
    got = metrics(log, "trait_judge")
    assert got["pos_mean"] == pytest.approx(90.0) and got["neg_mean"] == pytest.approx(10.0)
    assert got["mean"] == pytest.approx(50.0) and "pos_stderr" in got


def test_trait_eval_end_to_end_on_hf_tiny_model(pvtest, tiny_model_dir: Path) -> None:
    log = run(trait_eval(trait="pvtest", n_per_question=2, max_tokens=4), f"hf/{tiny_model_dir}",
              mock_grader(lambda prompt, config: grader_output(top_logprobs=distribution_logprobs({"20": 1.0}))),
              model_args={"device": "cpu"})
    assert log.status == "success", log.error
    assert len(log.samples) == 2
    for sample in log.samples:
        assert [m.role for m in sample.messages][:1] == ["user"]  # no system prompt: the model's default
        assert sample.scores["trait_judge"].value == 20.0
        assert sample.metadata["trait"] == "pvtest" and sample.metadata["instruction_id"] is None
    assert metrics(log, "trait_judge") == {"mean": 20.0, "stderr": 0.0}


def test_judge_hook_scorer_runs_in_the_task(pvtest) -> None:
    from inspect_ai.scorer import Score, scorer

    @scorer(metrics=[])
    def pvtest_extra_judge():
        async def score(state, target):
            return Score(value=float(len(state.output.completion)))

        return score

    module = types.ModuleType("fake_pv_judges_tasks")

    @hookimpl
    def register_judges(register):
        register("pvtest", lambda trait: pvtest_extra_judge())

    module.register_judges = register_judges
    plugin_manager.plugin_manager().register(module, name="pvtest_judges")
    log = run(trait_eval(trait="pvtest", n_per_question=1, max_tokens=8), mock_subject("12345"),
              mock_grader(grader_reply))
    assert log.status == "success"
    assert set(log.samples[0].scores) == {"trait_judge", "coherence_judge", "pvtest_extra_judge"}
    assert log.samples[0].scores["pvtest_extra_judge"].value == 5.0


# --- cache and re-scoring ------------------------------------------------------------------------------------


def test_judge_calls_use_the_cache_when_asked(pvtest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECT_CACHE_DIR", str(tmp_path / "cache"))
    first: list = []
    second: list = []
    task_args = {"trait": "pvtest", "n_per_question": 1, "max_tokens": 8}
    log1 = run(trait_eval(**task_args), mock_subject("fixed"), mock_grader(grader_reply, calls=first), cache=True)
    log2 = run(trait_eval(**task_args), mock_subject("fixed"), mock_grader(grader_reply, calls=second), cache=True)
    assert log1.status == log2.status == "success"
    assert len(first) == 2 and second == []
    assert log2.samples[0].scores["trait_judge"].value == log1.samples[0].scores["trait_judge"].value
    no_cache: list = []
    run(trait_eval(**task_args), mock_subject("fixed"), mock_grader(grader_reply, calls=no_cache))
    assert len(no_cache) == 2


def test_rescoring_a_log_recreates_our_scorers(pvtest, tmp_path: Path) -> None:
    from inspect_ai._cli.score import resolve_scorers
    from inspect_ai._eval.score import score

    log = run(trait_eval(trait="pvtest", n_per_question=2, max_tokens=8), mock_subject("answer 4 to x"),
              mock_grader(grader_reply), log_dir=str(tmp_path))
    assert metrics(log, "trait_judge")["mean"] == pytest.approx(40.0)
    log = read_eval_log(log.location)
    scorers = resolve_scorers(log, None, {})  # what `inspect score LOG` does: the log's own scorers
    assert len(scorers) == 2
    rescored = score(log, scorers, model_roles={"grader": mock_grader(
        lambda prompt, config: grader_output(top_logprobs=distribution_logprobs({"70": 1.0})))},
        action="overwrite")
    assert metrics(rescored, "trait_judge") == {"mean": 70.0, "stderr": 0.0}
    assert metrics(rescored, "coherence_judge") == {"mean": 70.0, "stderr": 0.0}
    assert all(s.scores["trait_judge"].value == 70.0 for s in rescored.samples)


def test_judge_min_mass_is_a_task_option(pvtest) -> None:
    """Mass 0.2 on numbers: unscored under the paper's 0.25 rule, scored when the floor is lowered."""
    reply = grader_output(top_logprobs=distribution_logprobs({"40": 0.2, "The": 0.8}))
    strict = run(trait_eval(trait="pvtest", n_per_question=1), mock_subject(), mock_grader(reply))
    assert math.isnan(strict.samples[0].scores["trait_judge"].value)
    lenient = run(trait_eval(trait="pvtest", n_per_question=1, judge_min_mass=0.1), mock_subject(), mock_grader(reply))
    assert lenient.samples[0].scores["trait_judge"].value == pytest.approx(40.0)
    with pytest.raises(PrerequisiteError, match="judge_min_mass must be between 0 and 1; got 2"):
        persona_collect(trait="pvtest", judge_min_mass=2)
