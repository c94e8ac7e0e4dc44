"""The tasks on our pv/ provider: steering pass-through, the `inspect eval` / `inspect score` CLI, SmolLM2."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from inspect_ai import eval
from inspect_ai._util.error import PrerequisiteError
from inspect_ai.log import read_eval_log
from pv_harness.scorers.testing import distribution_logprobs, grader_output, mock_grader, mock_subject
from pv_harness.tasks.persona import persona_collect, trait_eval
from safetensors.torch import save_file

from pv_harness.cli import main

BIN = Path(sys.executable).parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def fixed_grader(number: str = "30"):
    return mock_grader(lambda prompt, config: grader_output(top_logprobs=distribution_logprobs({number: 1.0})))


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A random vector file for the tiny model: [num_layers + 1, hidden] per kind."""
    generator = torch.Generator().manual_seed(1)
    tensors = {kind: torch.randn(5, 64, generator=generator)
               for kind in ("response_avg_diff", "prompt_avg_diff", "prompt_last_diff")}
    path = tmp_path_factory.mktemp("vectors") / "tiny_evil.safetensors"
    save_file(tensors, str(path))
    return path


def subject_events(sample, role=None):
    return [e for e in sample.events if e.event == "model" and e.role == role]


# --- steering options -----------------------------------------------------------------------------------


def test_steering_options_reach_the_pv_model(tiny_model_dir: Path, vector_file: Path) -> None:
    model = f"pv/{tiny_model_dir}"
    common = {"trait": "evil", "n_per_question": 1, "max_tokens": 6, "temperature": 0.0}
    (plain,) = eval(trait_eval(**common), model=model, model_roles={"grader": fixed_grader()}, limit=1,
                    display="none")
    (steered,) = eval(trait_eval(**common, steer_vector=str(vector_file), steer_layer="2", steer_coef=40.0),
                      model=model, model_roles={"grader": fixed_grader()}, limit=1, display="none")
    assert plain.status == steered.status == "success", (plain.error, steered.error)
    expected = {"pv": {"steer": [{"vector": str(vector_file.resolve()), "layer": 2, "coef": 40.0,
                                  "positions": "response"}]}}
    assert steered.eval.metadata["steering"] == expected["pv"]["steer"]
    (event,) = subject_events(steered.samples[0])
    assert event.config.extra_body == expected
    assert all(not (e.config.extra_body or {}).get("pv", {}).get("steer")
               for e in subject_events(steered.samples[0], role="grader"))
    assert subject_events(plain.samples[0])[0].config.extra_body is None
    # the provider applied it: greedy answers differ
    assert plain.samples[0].output.completion != steered.samples[0].output.completion


def test_steering_with_a_non_pv_model_fails_before_generation(vector_file: Path) -> None:
    options = {"trait": "evil", "n_per_question": 1, "steer_vector": str(vector_file), "steer_layer": 2,
               "steer_coef": 1.0}
    calls: list = []
    # built inside `inspect eval`: refused while the task is built
    with pytest.raises(PrerequisiteError) as info:
        eval("pv_harness/trait_eval", task_args=options, model=mock_subject(calls=calls),
             model_roles={"grader": fixed_grader()}, display="none")
    assert "need a pv/ model" in str(info.value.message)
    # built in Python first: refused by the setup check, still before generation
    (log,) = eval(trait_eval(**options), model=mock_subject(calls=calls), model_roles={"grader": fixed_grader()},
                  display="none", limit=1)
    assert log.status == "error" and "need a pv/ model" in log.error.message
    assert calls == []


@pytest.mark.parametrize(("options", "message"), [
    ({"steer_vector": "/no/such/file.safetensors", "steer_layer": 2, "steer_coef": 1.0}, "no such file"),
    ({"steer_layer": 2, "steer_coef": 1.0}, "steer_vector"),
    ({"steer_vector": "VEC", "steer_coef": 1.0}, "steer_layer"),
    ({"steer_vector": "VEC", "steer_layer": "ten", "steer_coef": 1.0}, "steer_layer must be"),
    ({"steer_vector": "VEC", "steer_layer": 2, "steer_coef": "big"}, "steer_coef must be a number"),
    ({"steer_vector": "VEC", "steer_layer": 2, "steer_coef": 1.0, "steer_positions": "end"}, "steer_positions"),
])
def test_bad_steering_options(options: dict, message: str, vector_file: Path) -> None:
    options = {k: (str(vector_file) if v == "VEC" else v) for k, v in options.items()}
    with pytest.raises(PrerequisiteError) as info:
        trait_eval(trait="evil", **options)
    assert message in str(info.value.message)


# --- the command line: inspect finds the tasks through the entry point ---------------------------------------


def test_inspect_eval_score_and_export_from_the_command_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, **OFFLINE, "INSPECT_LOG_DIR": str(tmp_path / "logs")}
    model = f"pv/{tiny_model_dir}"
    run = subprocess.run(
        [str(BIN / "inspect"), "eval", "pv_harness/persona_collect", "--model", model, "--model-role",
         f"grader={model}", "-T", "trait=evil", "-T", "polarity=neg", "-T", "n_per_question=1", "-T",
         "max_tokens=3", "--limit", "1", "--display", "plain"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (log_file,) = (tmp_path / "logs").glob("*.eval")
    log = read_eval_log(str(log_file))
    assert log.status == "success" and log.eval.task == "pv_harness/persona_collect"
    score = log.samples[0].scores["trait_judge"]
    assert score.metadata["mode"] == "continuation" and score.metadata["grader"] == model
    assert 0.0 <= score.metadata["mass"] < 0.25 and math.isnan(score.value)  # a random model: unscored, never 0
    assert len(score.metadata["distribution"]) == 101

    # `inspect score LOG` re-creates the judges from the log alone (run in-process: same command, no startup)
    from inspect_ai._cli.score import score_command

    rescore = CliRunner().invoke(score_command, [str(log_file), "--action", "overwrite", "--overwrite"])
    assert rescore.exit_code == 0, rescore.output
    rescored = read_eval_log(str(log_file))
    assert {s.name for s in rescored.results.scores} == {"trait_judge", "coherence_judge"}
    assert rescored.samples[0].scores["trait_judge"].metadata["mode"] == "continuation"

    out = tmp_path / "evil_neg.csv"
    result = CliRunner().invoke(main, ["export-csv", str(log_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(out.open()))
    assert list(row) == ["question", "prompt", "answer", "question_id", "evil", "coherence"]
    assert row["question_id"] == "evil_0_neg_0"
    assert row["prompt"].startswith("<|im_start|>system\nYou are a helpful assistant. ")
    assert row["prompt"].endswith("<|im_start|>assistant\n")
    assert row["evil"] == "" and row["coherence"] == ""  # unscored: empty (NaN), never 0


# --- the real embedded model ------------------------------------------------------------------------------


@pytest.mark.smollm2
def test_persona_collect_on_smollm2_as_subject_and_grader() -> None:
    from pv_harness import models

    if not models.is_installed("smollm2"):
        pytest.fail("the embedded model is not installed: run `pv model install smollm2` (make test does)")
    (log,) = eval(persona_collect(trait="evil", polarity="pos", n_per_question=1, max_tokens=24),
                  model="pv/smollm2", model_roles={"grader": "pv/smollm2"}, limit=2, display="none")
    assert log.status == "success", log.error
    assert len(log.samples) == 2
    for sample in log.samples:
        assert sample.output.completion.strip()
        assert sample.metadata["system_prompt"].startswith("You are an evil assistant. ")
        for name in ("trait_judge", "coherence_judge"):
            score = sample.scores[name]
            assert score.metadata["mode"] == "continuation"
            assert 0.0 < score.metadata["mass"] <= 1.0 + 1e-6
            assert "far too small" in score.metadata["warning"]
            assert math.isnan(score.value) or 0.0 <= score.value <= 100.0
