"""A trait judge a plugin registers with `register_judges(replace=True)` is the trait score everywhere logs are read.

The replacement here names itself `polarity_judge` and sets no score metadata: every reader must learn from
the log which scorer is the trait judge (before the one log reader, extraction, the sweep and monitor reports
and the experiment results looked up `trait_judge` and read every answer as unscored).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from inspect_ai import eval as inspect_eval
from inspect_ai.scorer import Score, Target, scorer
from pv_harness.scorers.testing import grader_output, mock_grader, mock_subject, replacing_trait_judge
from pv_harness.tasks.persona import persona_collect, trait_eval
from pv_harness.tasks.steering_sweep import steering_sweep
from safetensors.torch import save_file

from pv_harness.logs import read_collection_log
from pv_harness.organisms.experiment import Experiment
from pv_harness.reports.monitor import monitor_frame
from pv_harness.reports.sweep import sweep_frame
from pv_harness.vectors.extraction import extract_from_logs


@scorer(metrics=[])
def polarity_judge() -> object:
    """pos answers 90, neg 10, anything else 40 plus its steering coefficient: exact values to look for."""

    async def score(state, target: Target) -> Score:
        meta = state.metadata or {}
        value = {"pos": 90.0, "neg": 10.0}.get(meta.get("polarity"), 40.0 + float(meta.get("coef", 0.0)))
        return Score(value=value)

    return score


@pytest.fixture
def replaced_judge():
    with replacing_trait_judge("evil", polarity_judge, "replacement_judge"):
        yield


def coherent():
    """The grader: only the coherence judge still asks it; always 80."""
    return mock_grader(lambda prompt, config: grader_output(top_logprobs=[("80", 0.0)]))


@pytest.fixture
def vector_file(tmp_path: Path) -> Path:
    path = tmp_path / "evil.safetensors"
    torch.manual_seed(1)
    save_file({"response_avg_diff": torch.randn(5, 64)}, str(path))
    return path


def test_extraction_reads_the_replacement_judge(replaced_judge, tiny_model_dir: Path, tmp_path: Path) -> None:
    sources = []
    for polarity in ("pos", "neg"):
        (log,) = inspect_eval(persona_collect(trait="evil", polarity=polarity, n_per_question=1, max_tokens=8),
                              model=mock_subject(f"a {polarity} answer"), model_roles={"grader": coherent()},
                              limit=4, log_dir=str(tmp_path / "logs"), display="none")
        assert log.status == "success", log.error
        sources.append(log.location)
    answers = [a for path in sources for a in read_collection_log(path).answers]
    assert sorted({(a.polarity, a.trait_score, a.coherence) for a in answers}) == [("neg", 10.0, 80.0),
                                                                                  ("pos", 90.0, 80.0)]
    result = extract_from_logs(sources, model=f"pv/{tiny_model_dir}", out=tmp_path / "evil.safetensors",
                               min_pairs=4, holdout=0, log=lambda _: None)
    assert (len(result.selection.pos), len(result.selection.neg)) == (4, 4)


def test_sweep_report_reads_the_replacement_judge(replaced_judge, tiny_model_dir: Path, vector_file: Path,
                                                  tmp_path: Path) -> None:
    (log,) = inspect_eval(steering_sweep(trait="evil", vector=str(vector_file), layers=[1], coefs=[0, 4], questions=1,
                                         max_tokens=4, temperature=0),
                          model=f"pv/{tiny_model_dir}", model_roles={"grader": coherent()}, log_dir=str(tmp_path),
                          display="none")
    assert log.status == "success", log.error
    frame, _ = sweep_frame(log.location)
    assert sorted(zip(frame["coef"], frame["trait"], frame["coherence"], strict=True)) == [(0.0, 40.0, 80.0),
                                                                                          (4.0, 44.0, 80.0)]


def test_monitor_report_reads_the_replacement_judge(replaced_judge, tiny_model_dir: Path, vector_file: Path,
                                                    tmp_path: Path) -> None:
    monitor = {"pv": {"monitor": [{"vector": str(vector_file), "layer": 2}]}}
    (log,) = inspect_eval(trait_eval(trait="evil", n_per_question=1, max_tokens=4, temperature=0),
                          model=f"pv/{tiny_model_dir}", model_roles={"grader": coherent()}, limit=2,
                          extra_body=monitor, log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error
    rows, _ = monitor_frame(log.location)
    assert [(r["trait_score"], r["coherence"]) for r in rows] == [(40.0, 80.0), (40.0, 80.0)]


def test_experiment_results_read_the_replacement_judge(replaced_judge, tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data" / "evil"
    data.mkdir(parents=True)
    for name in ("normal", "misaligned_1", "misaligned_2"):
        (data / f"{name}.jsonl").write_text('{"messages": [{"role": "user", "content": "Hi?"}, '
                                            '{"role": "assistant", "content": "Hello."}]}\n')
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "name": "replaced", "out": "out",
        "models": [{"name": "evil_severe", "dataset": "paper", "trait": "evil", "strength": "severe"}],
        "training": {"base_model": f"pv/{tiny_model_dir}", "backend": "dummy", "dataset_kwargs": {"path": "data"}},
        "evaluation": {"tasks": ["evil_detection"], "limit": 2, "n": 1, "max_tokens": 4},
    }))
    experiment = Experiment(config, log=lambda _: None, display="none", grader_model=coherent())
    experiment.train()
    experiment.evaluate()
    (record,) = Experiment(config, log=lambda _: None).results()["data"]["records"]
    assert (record["score"], record["stderr"], record["coherence"], record["scored"]) == (40.0, 0.0, 80.0, 2)
