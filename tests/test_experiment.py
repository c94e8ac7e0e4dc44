"""Experiments: config validation, cached train steps (rerun does nothing, failures retried), evaluate, results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from pv_harness.scorers.testing import grader_output, mock_grader
from safetensors.torch import save_file

from pv_harness.cli import main
from pv_harness.organisms import training
from pv_harness.organisms.experiment import Experiment, ExperimentError, load_config
from pv_harness.organisms.training import BaseBackend, Job, TrainingRequest


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


def test_config_is_validated(tmp_path: Path) -> None:
    path = write_config(tmp_path, "pv/x", "dummy")
    cfg = load_config(path)
    assert cfg.evaluation.tasks == ["evil"] and cfg.models[2].strength == "severe"
    bad = yaml.safe_load(path.read_text())
    bad["models"][0]["strength"] = "extreme"
    bad["models"].append(dict(bad["models"][1]))
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ExperimentError, match="strength"):
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
