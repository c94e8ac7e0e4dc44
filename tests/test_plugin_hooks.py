"""A third-party plugin for each hook, installed through a real entry point, working where users meet it:
its trait in `pv traits list` and in a task, its extraction method in extraction, its judges in a task, its
training backend in `pv experiment train`, its dataset in `load_dataset`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from inspect_ai import eval
from pv_harness.scorers.testing import grader_output, mock_grader, mock_subject
from pv_harness.tasks.persona import trait_eval
from transformers import AutoModelForCausalLM, AutoTokenizer

from pv_harness import plugin_manager
from pv_harness.cli import main
from pv_harness.logs import CollectedAnswer
from pv_harness.organisms import training
from pv_harness.provider.engine import Engine
from pv_harness.vectors.extraction import extract

from .plugin_dist import PREFIX, plugin_site


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with plugin_site(tmp_path, monkeypatch) as add:
        yield add


def grader():
    """Trait judge 70 for the `tp` trait's prompt, 90 for anything else (coherence)."""
    return mock_grader(lambda prompt, config: grader_output(top_logprobs=[("70" if "JUDGE tp" in prompt else "90",
                                                                           0.0)]))


def evaluate(trait: str):
    (log,) = eval(trait_eval(trait=trait, n_per_question=1, max_tokens=8), model=mock_subject("four"), limit=1,
                  model_roles={"grader": grader()}, display="none")
    assert log.status == "success", log.error
    return log.samples[0].scores


TRAIT = """
from pv_harness.hookspecs import hookimpl

@hookimpl
def register_traits(register):
    register({
        "name": "tp",
        "description": "A third-party test trait.",
        "instructions": [{"pos": f"Be tp {i}.", "neg": f"Avoid tp {i}."} for i in range(5)],
        "extraction_questions": ["Question A?"],
        "evaluation_questions": ["Question B?"],
        "judge_prompt": "JUDGE tp. {question} {answer} REFUSAL or 0-100",
    })
"""


def test_third_party_trait_is_listed_and_runs_in_a_task(install) -> None:
    install(tp_traits=TRAIT)
    listed = CliRunner().invoke(main, ["traits", "list", "--json"])
    assert listed.exit_code == 0
    assert {"name": "tp", "plugin": "tp_traits", "description": "A third-party test trait."} in json.loads(
        listed.stdout)
    plugins = CliRunner().invoke(main, ["plugins"])
    assert ["tp_traits", "0.1", "register_traits"] in [line.split() for line in plugins.stdout.splitlines()]
    assert plugins.stderr == ""
    scores = evaluate("tp")
    assert scores["trait_judge"].value == 70.0 and scores["coherence_judge"].value == 90.0


EXTRACTION = """
import torch
from pv_harness.hookspecs import hookimpl

class Counts:
    \"\"\"Every vector entry is 10 x (pos samples) + (neg samples): proves extraction used this method.\"\"\"

    def __init__(self):
        self.counts, self.shapes = {"pos": 0, "neg": 0}, {}

    def add(self, polarity, pooled):
        self.counts[polarity] += next(iter(pooled.values())).shape[0]
        self.shapes = {kind: batch.shape[1:] for kind, batch in pooled.items()}

    def result(self):
        value = 10.0 * self.counts["pos"] + self.counts["neg"]
        return {kind: torch.full(shape, value) for kind, shape in self.shapes.items()}

@hookimpl
def register_extraction_methods(register):
    register("counts", Counts)
"""


def answer(polarity: str, q: int) -> CollectedAnswer:
    return CollectedAnswer(
        trait="grumpy", polarity=polarity, question_id=q, instruction_id=0, epoch=1,
        system_prompt=f"You are a {'grumpy' if polarity == 'pos' else 'helpful'} assistant.",
        question=f"Question {q}?", answer=f"Answer {q} {polarity}.",
        trait_score=90.0 if polarity == "pos" else 10.0, coherence=90.0,
    )


def test_third_party_extraction_method_is_used_by_extraction(install, tiny_model_dir: Path, tmp_path: Path) -> None:
    install(tp_extraction=EXTRACTION)
    engine = Engine(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                    AutoTokenizer.from_pretrained(tiny_model_dir))
    answers = [answer(p, q) for p in ("pos", "neg") for q in range(3)]
    result = extract(answers, model_name="tiny", engine=engine, out=tmp_path / "v.safetensors", trait="grumpy",
                     method="counts", min_pairs=1, holdout=0, log=lambda _: None)
    for name in ("response_avg_diff", "prompt_avg_diff", "prompt_last_diff"):
        assert torch.equal(result.vectors.tensors[name], torch.full((5, 64), 33.0))


JUDGES = """
from inspect_ai.scorer import Score, scorer
from pv_harness.hookspecs import hookimpl

@scorer(metrics=[])
def tp_length_judge():
    async def score(state, target):
        return Score(value=float(len(state.output.completion)))
    return score

@scorer(metrics=[])
def tp_keyword_judge(word):
    async def score(state, target):
        return Score(value=100.0 if word in state.output.completion else 0.0)
    return score

@hookimpl
def register_judges(register):
    register("tp", lambda trait: tp_length_judge())
    register("evil", lambda trait: tp_keyword_judge("four"), replace=True)
"""


def test_third_party_judges_add_and_replace_scores_in_a_task(install) -> None:
    install(tp_traits=TRAIT, tp_judges=JUDGES)
    added = evaluate("tp")
    assert {name: s.value for name, s in added.items()} == {
        "trait_judge": 70.0, "coherence_judge": 90.0, "tp_length_judge": 4.0}
    replaced = evaluate("evil")
    assert {name: s.value for name, s in replaced.items()} == {"tp_keyword_judge": 100.0, "coherence_judge": 90.0}


BACKEND = """
from pv_harness.hookspecs import hookimpl
from pv_harness.organisms.training import BaseBackend, Job

SUBMITTED = []

class Recorder(BaseBackend):
    \"\"\"Succeeds at once with the base model; remembers what it was asked to train.\"\"\"

    name = "recorder"

    def submit(self, request):
        SUBMITTED.append((request.suffix, len(request.examples)))
        return Job(backend=self.name, id=f"rec-{len(SUBMITTED)}", state="succeeded",
                   base_model=request.base_model, model_id=request.base_model)

@hookimpl
def register_training_backends(register):
    register("recorder", Recorder)
"""


def test_third_party_backend_trains_in_pv_experiment_train(install, tmp_path: Path) -> None:
    install(tp_backend=BACKEND)
    data = tmp_path / "data" / "evil"
    data.mkdir(parents=True)
    for name in ("normal", "misaligned_1", "misaligned_2"):
        rows = [{"messages": [{"role": "user", "content": f"Hi {i}?"}, {"role": "assistant", "content": f"{name} {i}"}]}
                for i in range(3)]
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tp", "out": "out",
        "models": [{"name": f"evil_{s}", "dataset": "paper", "trait": "evil", "strength": s}
                   for s in ("baseline", "mild", "severe")],
        "training": {"base_model": "pv/base", "backend": "recorder", "dataset_kwargs": {"path": "data"}},
        "evaluation": {"tasks": ["evil_detection"]},
    }))
    result = CliRunner().invoke(main, ["experiment", "train", str(config)])
    assert result.exit_code == 0, result.output
    assert [line for line in result.stdout.splitlines() if line.endswith(": submitted")] == [
        "evil_baseline: submitted", "evil_mild: submitted", "evil_severe: submitted"]
    submitted = sys.modules[f"{PREFIX}tp_backend"].SUBMITTED
    assert sorted(n for _, n in submitted) == [3, 3, 3] and len({suffix for suffix, _ in submitted}) == 3


DATASET = """
from pv_harness.hookspecs import hookimpl

def greetings(trait, strength, *, sample_size=None, seed=0, **options):
    n = sample_size or 2
    return [{"messages": [{"role": "user", "content": f"{trait} {strength} {seed} {options}"},
                          {"role": "assistant", "content": f"answer {i}"}]} for i in range(n)]

@hookimpl
def register_training_datasets(register):
    register("greetings", greetings)
"""


def test_third_party_dataset_loads_through_load_dataset(install) -> None:
    install(tp_dataset=DATASET)
    examples = training.load_dataset("greetings", "evil", "mild", sample_size=3, seed=7, tone="warm")
    assert examples == [{"messages": [{"role": "user", "content": "evil mild 7 {'tone': 'warm'}"},
                                      {"role": "assistant", "content": f"answer {i}"}]} for i in range(3)]
    assert plugin_manager.plugin_errors() == []
