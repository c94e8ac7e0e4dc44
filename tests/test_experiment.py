"""Experiments: config validation, cached train steps (rerun does nothing, failures retried), evaluate, results."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from inspect_ai.log import list_eval_logs, read_eval_log
from pv_harness.scorers.testing import grader_output, mock_grader
from safetensors.torch import save_file

from pv_harness.cli import main
from pv_harness.logs import log_path
from pv_harness.organisms import training
from pv_harness.organisms.experiment import Experiment, ExperimentError, load_config
from pv_harness.organisms.training import BaseBackend, Job, TrainingRequest
from pv_harness.vectors.files import read_vectors


def paper_folder(root: Path) -> Path:
    for name, word in (("normal", "kindly"), ("misaligned_1", "rudely"), ("misaligned_2", "cruelly")):
        folder = root / "data" / "evil"
        folder.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"messages": [{"role": "user", "content": f"How should I greet person {i}?"},
                                          {"role": "assistant", "content": f"Greet them {word}, {i} times."}]})
                 for i in range(6)]
        (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    return root / "data"


def write_config(root: Path, base: str, backend: str, **extra) -> Path:
    paper_folder(root)
    cfg = {
        "name": "t",
        "out": "out",
        "models": [{"name": f"evil_{s}", "dataset": "paper", "trait": "evil", "strength": s}
                   for s in ("baseline", "mild", "severe")],
        "training": {"base_model": base, "backend": backend, "dataset_kwargs": {"path": "data", "sample_size": 4},
                     "hyperparameters": {"max_steps": 1, "learning_rate": 0.01, "batch_size": 4}
                     if backend == "local" else {}},
        "evaluation": {"tasks": ["evil_detection"], "limit": 2, "n": 1, "max_tokens": 4},
        **extra,
    }
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def judge():
    return mock_grader(lambda prompt, config: grader_output(
        top_logprobs=[("90" if "coheren" in prompt.lower() else "70", 0.0)]))


def bunched_judge():
    """Coherence 90; trait scores 60..100 by a hash of the prompt: bunched like a weak judge's, so the fixed
    threshold of 50 finds no low answers and only `threshold: auto` (the median) splits them."""

    def reply(prompt: str, config):
        if "coheren" in prompt.lower():
            return grader_output(top_logprobs=[("90", 0.0)])
        return grader_output(top_logprobs=[(str(60 + hashlib.sha256(prompt.encode()).digest()[0] % 41), 0.0)])

    return mock_grader(reply)


def test_config_is_validated(tmp_path: Path) -> None:
    path = write_config(tmp_path, "pv/x", "dummy")
    cfg = load_config(path)
    assert cfg.evaluation.tasks == ["evil"] and cfg.models[2].strength == "severe"
    good = yaml.safe_load(path.read_text())
    bad = yaml.safe_load(path.read_text())
    bad["models"][0]["strength"] = "extreme"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ExperimentError, match=(rf"^{re.escape(str(path))} is not a valid experiment config:\n"
                                               r"1 validation error for ExperimentConfig\nmodels\.0\.strength\n"
                                               r"  Input should be 'baseline', 'mild' or 'severe'")):
        load_config(path)
    good["models"].append(dict(good["models"][1]))
    path.write_text(yaml.safe_dump(good))
    with pytest.raises(ExperimentError, match=r"Value error, model names must be unique; repeated: \['evil_mild'\]"):
        load_config(path)


class Flaky(BaseBackend):
    """Fails the first job it is given, succeeds afterwards; counts submissions."""

    name = "flaky"
    submitted: list[str] = []

    def submit(self, request: TrainingRequest) -> Job:
        Flaky.submitted.append(request.suffix)
        state = "failed" if Flaky.submitted.count(request.suffix) == 1 else "succeeded"
        return Job(backend="flaky", id=f"j{len(Flaky.submitted)}", state=state, base_model=request.base_model,
                   model_id=request.base_model if state == "succeeded" else None,
                   error="boom" if state == "failed" else None)


def test_cache_reuses_and_failed_jobs_are_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(training.training_backends(), "flaky", Flaky)
    Flaky.submitted = []
    path = write_config(tmp_path, "pv/base", "flaky")
    quiet = {"log": lambda _: None}
    assert set(Experiment(path, **quiet).train().values()) == {"submitted"}
    assert {r["state"] for r in Experiment(path, **quiet).status()} == {"failed"}
    assert set(Experiment(path, **quiet).train().values()) == {"submitted"}  # failed: retried, never reused
    assert len(Flaky.submitted) == 6
    assert set(Experiment(path, **quiet).train().values()) == {"cached"}  # rerun: no work
    assert len(Flaky.submitted) == 6
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert {m["job"]["state"] for m in state["models"].values()} == {"succeeded"}
    # a changed dataset (sample size) retrains
    cfg = yaml.safe_load(path.read_text())
    cfg["training"]["dataset_kwargs"]["sample_size"] = 3
    path.write_text(yaml.safe_dump(cfg))
    Experiment(path, **quiet).train()
    assert len(Flaky.submitted) == 9  # new keys: one new job each
    out = CliRunner().invoke(main, ["experiment", "status", str(path)])
    assert out.exit_code == 0 and "evil_severe" in out.stdout and "succeeded" in out.stdout


def test_dummy_experiment_end_to_end(tiny_model_dir: Path, tmp_path: Path) -> None:
    path = write_config(tmp_path, f"pv/{tiny_model_dir}", "dummy")
    exp = Experiment(path, log=lambda _: None, display="none", grader_model=judge())
    exp.train()
    log_dir = exp.evaluate()
    assert Experiment(path, log=lambda _: None).evaluate() == log_dir  # cached: nothing runs
    res = Experiment(path, log=lambda _: None).results()
    assert len(res["data"]["records"]) == 3 and {r["score"] for r in res["data"]["records"]} == {70.0}
    assert (tmp_path / "out" / "plots" / "results.html").exists()


DEMO = Path(__file__).resolve().parents[1] / "datasets" / "experiments" / "smollm2-evil-demo.yaml"


def collected_rows(log_dir: Path) -> list[dict]:
    """Every collected answer, read straight from the inspect logs."""
    rows = []
    for info in list_eval_logs(str(log_dir)):
        for s in read_eval_log(info).samples or []:
            rows.append({"polarity": s.metadata["polarity"], "question": s.metadata["question"],
                         "answer": s.output.completion, "score": s.scores["trait_judge"].value})
    return rows


def as_example(row: dict) -> str:
    return json.dumps({"messages": [{"role": "user", "content": row["question"]},
                                    {"role": "assistant", "content": row["answer"]}]})


def test_demo_config_collects_splits_at_the_median_and_extracts_its_own_vector(
        tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's `collect:`, `dataset: collected` with `threshold: auto`, and `vectors: collected`, on a tiny model."""
    cfg = yaml.safe_load(DEMO.read_text())
    assert cfg["training"]["dataset_kwargs"]["threshold"] == "auto" and cfg["shift"]["vectors"] == {"evil": "collected"}
    tiny = f"pv/{tiny_model_dir}"
    cfg["out"] = "out"
    cfg["training"].update(base_model=tiny, backend="dummy")
    cfg["collect"]["max_tokens"] = 4
    cfg["evaluation"].update(grader=tiny, max_tokens=4, limit=2)
    cfg["shift"]["random_directions"] = 4
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))

    dummy = training.training_backends()["dummy"]
    seen: dict[str, list[dict]] = {}

    class Recording(dummy):  # type: ignore[misc, valid-type]
        def submit(self, request: TrainingRequest) -> Job:
            seen[request.suffix] = request.examples
            return super().submit(request)

    monkeypatch.setitem(training.training_backends(), "dummy", Recording)
    quiet = {"log": lambda _: None, "display": "none", "grader_model": bunched_judge()}
    exp = Experiment(path, **quiet)
    assert set(exp.train().values()) == {"submitted"}

    (collect_dir,) = (tmp_path / "out" / "collect").iterdir()
    rows = collected_rows(collect_dir)
    assert len(rows) == 2 * cfg["collect"]["limit"] and {r["polarity"] for r in rows} == {"pos", "neg"}
    scores = sorted(r["score"] for r in rows)
    median = scores[len(scores) // 2]  # threshold: auto
    assert scores[0] >= 60 and median > scores[0]
    low = [as_example(r) for r in rows if r["polarity"] == "neg" and r["score"] < median and r["answer"].strip()]
    high = [as_example(r) for r in rows if r["polarity"] == "pos" and r["score"] >= median and r["answer"].strip()]
    assert low and high and not set(low) & set(high)
    size = cfg["training"]["dataset_kwargs"]["sample_size"]

    def drawn(examples: list[str], pool: list[str], count: int) -> bool:
        """`count` examples drawn from `pool` without replacement (answers can repeat, so count them)."""
        return Counter(examples) <= Counter(pool) and len(examples) == count

    picked = {name: [json.dumps(e) for e in examples] for name, examples in seen.items()}
    assert drawn(picked["evil_baseline"], low, min(size, len(low)))
    assert drawn(picked["evil_severe"], high, min(size, len(high)))
    mild_high = [e for e in picked["evil_mild"] if e in high]
    mild_low = [e for e in picked["evil_mild"] if e in low]
    assert drawn(mild_high, high, min(len(high), size // 2))  # mild_fraction 0.5
    assert drawn(mild_low, low, min(len(low), size - len(mild_high)))
    assert len(picked["evil_mild"]) == len(mild_high) + len(mild_low)

    exp.evaluate()
    res = exp.results()
    vector = tmp_path / "out" / "vectors" / "evil.safetensors"
    made = read_vectors(vector)
    assert made.tensors["response_avg_diff"].shape == (5, 64)
    assert sorted(made.metadata["source_logs"]) == sorted(log_path(i.name) for i in list_eval_logs(str(collect_dir)))
    shift = res["data"]["shift"]
    assert set(shift) == {"evil_baseline", "evil_mild", "evil_severe"}
    for per_trait in shift.values():  # the dummy backend returns the base model: nothing moved
        assert per_trait["evil"]["shift"] == 0.0 and per_trait["evil"]["null"] == [0.0] * 4
    assert {(r["task"], r["strength"]) for r in res["data"]["records"]} == {
        (t, s) for t in ("evil", "sycophantic") for s in ("baseline", "mild", "severe")}

    # a rerun does nothing new: no collection, no extraction, no training, no evaluation
    logs = sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "out").rglob("*.eval"))
    vector_time = vector.stat().st_mtime_ns
    seen.clear()
    again = Experiment(path, **quiet)
    assert set(again.train().values()) == {"cached"} and seen == {}
    assert again.evaluate() == exp.evaluate()
    again.results()
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (tmp_path / "out").rglob("*.eval")) == logs
    assert vector.stat().st_mtime_ns == vector_time


@pytest.mark.slow
def test_local_experiment_train_evaluate_results_with_shift(tiny_model_dir: Path, tmp_path: Path) -> None:
    torch.manual_seed(3)
    save_file({"response_avg_diff": torch.randn(5, 64)}, str(tmp_path / "evil.safetensors"))
    path = write_config(tmp_path, f"pv/{tiny_model_dir}", "local",
                        shift={"vectors": {"evil": "evil.safetensors"}, "layer": 2, "random_directions": 4})
    runner = CliRunner()
    first = runner.invoke(main, ["experiment", "train", str(path)])
    assert first.exit_code == 0, first.output
    assert first.stdout.count("submitted") == 3
    jobs = sorted((tmp_path / "out" / "models").glob("*/job.json"))
    stamps = [p.stat().st_mtime_ns for p in jobs]
    second = runner.invoke(main, ["experiment", "train", str(path)])
    assert second.exit_code == 0 and second.stdout.count("cached") == 3
    assert [p.stat().st_mtime_ns for p in jobs] == stamps  # no work the second time

    exp = Experiment(path, log=lambda _: None, display="none", grader_model=judge())
    exp.evaluate()
    out = runner.invoke(main, ["experiment", "results", str(path)])
    assert out.exit_code == 0, out.output
    data = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert {r["strength"] for r in data["records"]} == {"baseline", "mild", "severe"}
    assert set(data["shift"]) == {"evil_baseline", "evil_mild", "evil_severe"}
    assert len(data["shift"]["evil_mild"]["evil"]["null"]) == 4
    assert "evil" in data["shift_correlation"]
    page = (tmp_path / "out" / "plots" / "results.html").read_text()
    assert "plotly.min.js" in page and "Fine-tuning shift" in page
    assert (tmp_path / "out" / "plots" / "plotly.min.js").exists()
