"""The projection scorer: a monitored eval through inspect on the tiny pv/ model logs, per sample, exactly the
numbers of the monitor metadata (response mean, last prompt token, max) as score columns with mean metrics; no
monitor data is unscored, never 0."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest
import torch
from inspect_ai import Task
from inspect_ai import eval as inspect_eval
from inspect_ai.dataset import Sample
from inspect_ai.scorer import Score, Target, scorer
from inspect_ai.solver import generate
from pv_harness.scorers.projection import projection, projection_values
from pv_harness.scorers.testing import grader_output, mock_grader, mock_subject, replacing_trait_judge
from safetensors.torch import save_file


@scorer(metrics=[])
def fixed_judge() -> object:
    async def score(state, target: Target) -> Score:
        return Score(value=50.0)

    return score


@pytest.fixture
def vector_file(tmp_path: Path) -> Path:
    path = tmp_path / "evil.safetensors"
    save_file({"response_avg_diff": torch.randn(5, 64, generator=torch.Generator().manual_seed(3))}, str(path))
    return path


def test_monitored_eval_scores_equal_the_monitor_metadata(tiny_model_dir: Path, vector_file: Path,
                                                          tmp_path: Path) -> None:
    coherent = mock_grader(lambda prompt, config: grader_output(top_logprobs=[("80", 0.0)]))
    with replacing_trait_judge("evil", fixed_judge, "fixed_judge"):
        (log,) = inspect_eval("pv_harness/prompt_monitor",
                              task_args={"trait": "evil", "vector": str(vector_file), "layer": 2, "questions": 2,
                                         "max_tokens": 4, "temperature": 0, "compare_layers": [1]},
                              model=f"pv/{tiny_model_dir}", model_roles={"grader": coherent},
                              log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error
    assert [s.name for s in log.eval.scorers][-1] == "projection"  # after the judges: the trait judge stays first
    values: dict[str, list[float]] = {}
    for sample in log.samples:
        layer2, layer1 = sample.output.metadata["pv_monitor"]
        assert (layer2["layer"], layer1["layer"]) == (2, 1)
        expected = {}
        for name, monitor in (("layer2", layer2), ("layer1", layer1)):
            tokens = monitor["projections"]
            assert tokens and monitor["response_mean"] == statistics.fmean(tokens)
            expected |= {f"{name}_response_mean": statistics.fmean(tokens),
                         f"{name}_last_prompt": monitor["prompt_last"], f"{name}_max": max(tokens)}
        assert sample.scores["projection"].value == expected
        for key, value in expected.items():
            values.setdefault(key, []).append(value)
    by_key = {s.name: s for s in log.results.scores if s.scorer == "projection"}
    assert set(by_key) == set(values)
    for key, column in values.items():
        assert by_key[key].metrics["mean"].value == pytest.approx(statistics.fmean(column), abs=1e-12)
        assert by_key[key].scored_samples == 6


def test_no_monitor_data_is_unscored_not_zero(tmp_path: Path) -> None:
    task = Task(dataset=[Sample(input="hi")], solver=generate(), scorer=projection())
    (log,) = inspect_eval(task, model=mock_subject("hello"), log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error
    value = log.samples[0].scores["projection"].value
    assert isinstance(value, float) and math.isnan(value)


def test_an_empty_answer_has_no_mean_and_no_max() -> None:
    (value,) = [projection_values([{"layer": 3, "vector": "v", "kind": "response_avg_diff", "tokens": [],
                                    "projections": [], "prompt_last": -0.25, "response_mean": None}])]
    assert value["last_prompt"] == -0.25 and set(value) == {"response_mean", "last_prompt", "max"}
    assert math.isnan(value["response_mean"]) and math.isnan(value["max"])


def test_entries_from_different_vectors_are_named_by_file_and_layer() -> None:
    entry = {"tokens": ["a", "b"], "projections": [1.0, 3.0], "prompt_last": 0.5, "response_mean": 2.0,
             "kind": "response_avg_diff"}
    value = projection_values([{**entry, "vector": "/x/evil.safetensors", "layer": 2},
                               {**entry, "vector": "/x/kind.safetensors", "layer": 2}])
    assert value == {"evil_layer2_response_mean": 2.0, "evil_layer2_last_prompt": 0.5, "evil_layer2_max": 3.0,
                     "kind_layer2_response_mean": 2.0, "kind_layer2_last_prompt": 0.5, "kind_layer2_max": 3.0}
