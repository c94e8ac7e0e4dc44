"""`pv experiment` hardening: failed jobs exit 1 (the others still train), configs checked before any work,
a corrupt state file named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pv_harness.cli import main
from pv_harness.organisms import training
from pv_harness.organisms.experiment import Experiment, ExperimentError, load_config
from pv_harness.organisms.training import BaseBackend, Job, TrainingError, TrainingRequest


def write_config(root: Path, base: str, backend: str) -> Path:
    """Three evil organisms on a tiny paper-layout dataset (as in test_experiment)."""
    folder = root / "data" / "evil"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("normal", "misaligned_1", "misaligned_2"):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"messages": [
            {"role": "user", "content": f"Greet person {i}?"}, {"role": "assistant", "content": f"{name} {i}"}]})
            + "\n" for i in range(6)))
    path = root / "exp.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "out": "out",
        "models": [{"name": f"evil_{s}", "dataset": "paper", "trait": "evil", "strength": s}
                   for s in ("baseline", "mild", "severe")],
        "training": {"base_model": base, "backend": backend, "dataset_kwargs": {"path": "data", "sample_size": 4}},
        "evaluation": {"tasks": ["evil_detection"], "limit": 2, "n": 1, "max_tokens": 4},
    }))
    return path


class Picky(BaseBackend):
    """Trains `evil_baseline`; raises when given `evil_mild`; reports `evil_severe` failed (as a remote job)."""

    name = "picky"
    submitted: list[str] = []

    def submit(self, request: TrainingRequest) -> Job:
        Picky.submitted.append(request.suffix)
        if request.suffix == "evil_mild":
            raise TrainingError("quota exceeded")
        state = "succeeded" if request.suffix == "evil_baseline" else "failed"
        return Job(backend=self.name, id=f"j-{request.suffix}", state=state, base_model=request.base_model,
                   model_id=request.base_model if state == "succeeded" else None,
                   error=None if state == "succeeded" else "boom")


def test_train_exits_1_naming_each_failed_job_after_training_the_others(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(training.training_backends(), "picky", Picky)
    Picky.submitted = []
    path = write_config(tmp_path, "pv/base", "picky")
    result = CliRunner().invoke(main, ["experiment", "train", str(path)])
    assert result.exit_code == 1, result.output
    assert Picky.submitted == ["evil_baseline", "evil_mild", "evil_severe"]  # the raise stopped nothing
    out = tmp_path / "out"
    state = json.loads((out / "state.json").read_text())
    assert {n: m["job"]["state"] for n, m in state["models"].items()} == {
        "evil_baseline": "succeeded", "evil_mild": "failed", "evil_severe": "failed"}
    (mild_log,) = (out / "models").glob("evil_mild-*/job.json")
    assert json.loads(mild_log.read_text())["error"] == "TrainingError: quota exceeded"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: training evil_mild failed: TrainingError: quota exceeded (log: {mild_log})",
                      f"error: training evil_severe failed: boom (log: picky job j-evil_severe, recorded in "
                      f"{out / 'state.json'})"]
    assert "evil_baseline: submitted" in result.stdout
    again = CliRunner().invoke(main, ["experiment", "train", str(path)])  # failed jobs are retried, the good one kept
    assert again.exit_code == 1 and "evil_baseline: cached" in again.stdout
    assert Picky.submitted[3:] == ["evil_mild", "evil_severe"]


def test_train_exits_0_when_every_job_succeeded(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["experiment", "train", str(write_config(tmp_path, "pv/base", "dummy"))])
    assert result.exit_code == 0, result.output
    assert "error:" not in result.output


def _edit(path: Path, change) -> Path:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["models"][1].update(trait="evli"),
     "models.1.trait: trait 'evli' is not installed \\(pv traits list shows the installed traits\\)"),
    (lambda d: d["evaluation"].update(tasks=["evil", "evli_detection"]),
     "evaluation.tasks.1: unknown detection task 'evli_detection'; installed: .*\\bevil\\b.* "
     "\\(each also as <trait>_detection\\)"),
    (lambda d: d["evaluation"].update(limit=0), "evaluation.limit: Input should be greater than or equal to 1"),
    (lambda d: d["evaluation"].update(n=-1), "evaluation.n: Input should be greater than or equal to 1"),
    (lambda d: d["evaluation"].update(judge_min_mass=2), "evaluation.judge_min_mass: Input should be less than or "
                                                         "equal to 1"),
    (lambda d: d.update(collect={"max_tokens": 0}), "collect.max_tokens: Input should be greater than or equal to 1"),
    (lambda d: d.update(collect={"temperature": -1}), "collect.temperature: Input should be greater than or equal "
                                                       "to 0"),
    (lambda d: d["training"]["dataset_kwargs"].update(sample_size=0),
     "training.dataset_kwargs.sample_size: Input should be greater than or equal to 1"),
    (lambda d: d["models"][2].update(dataset_kwargs={"mild_fraction": 1.5}),
     "models.2.dataset_kwargs.mild_fraction: Input should be less than or equal to 1"),
    (lambda d: d["models"][0].update(dataset="papers"),
     "models.0.dataset: unknown training dataset 'papers'; installed: .*\\bpaper\\b.*"),
    (lambda d: d["training"].update(backend="dumy"), "training.backend: unknown training backend 'dumy'; installed: "
                                                     ".*\\bdummy\\b.*"),
    (lambda d: d["training"].update(poll_seconds=0), "training.poll_seconds: Input should be greater than 0"),
    (lambda d: d["training"].update(steering=[{"vector": "v.safetensors", "layer": 2, "coef": 4}]),
     "training.steering.0.vector: no vector file .*v\\.safetensors"),
    (lambda d: d["training"].update(steering=[{"vector": [0.5], "layer": -1, "coef": 4}]),
     "training.steering.0.layer: Input should be greater than or equal to 0"),
    (lambda d: d["training"].update(steering=[{"vector": [0.5], "layer": 1}]),
     "training.steering.0: a steering entry with op 'add' needs a coef"),
    (lambda d: d.update(shift={"vectors": {"evli": "collected"}}),
     "shift.vectors.evli: trait 'evli' is not installed \\(pv traits list shows the installed traits\\)"),
    (lambda d: d.update(shift={"vectors": {"evil": "evil.safetensors"}}),
     "shift.vectors: evil: no vector file .*evil\\.safetensors \\(a file, or `collected`\\)"),
    (lambda d: d.update(shift={"vectors": {"evil": "collected"}, "random_directions": 0}),
     "shift.random_directions: Input should be greater than or equal to 1"),
])
def test_every_option_is_checked_at_load_in_one_line(tmp_path: Path, change, message: str) -> None:
    path = _edit(write_config(tmp_path, "pv/base", "dummy"), change)
    with pytest.raises(ExperimentError) as caught:
        load_config(path)
    assert re.fullmatch(f"{re.escape(str(path))}: {message}", str(caught.value)), str(caught.value)


def test_an_unknown_trait_is_reported_by_every_subcommand_before_any_work(tmp_path: Path) -> None:
    path = _edit(write_config(tmp_path, "pv/base", "dummy"), lambda d: d["models"][0].update(trait="evli"))
    for command in ("train", "status", "evaluate", "results"):
        result = CliRunner().invoke(main, ["experiment", command, str(path)])
        assert result.exit_code == 1 and result.stderr.strip().splitlines() == [
            f"Error: {path}: models.0.trait: trait 'evli' is not installed (pv traits list shows the installed "
            "traits)"], result.output
    assert not (tmp_path / "out").exists()


def test_a_valid_config_keeps_its_values(tmp_path: Path) -> None:
    """Checking options changes none of them (the cache keys hash them as written)."""
    path = _edit(write_config(tmp_path, "pv/base", "dummy"),
                 lambda d: d["training"]["dataset_kwargs"].update(threshold="auto", mild_fraction=0.25, extra=1))
    cfg = load_config(path)
    assert cfg.training.dataset_kwargs == {"path": "data", "sample_size": 4, "threshold": "auto",
                                           "mild_fraction": 0.25, "extra": 1}
    assert cfg.evaluation.tasks == ["evil"]


@pytest.mark.parametrize(("text", "why"), [
    ("{\"models\": {", "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 13 "
                      "(char 12)"),
    ("[]", "a JSON object expected, got list"),
    ("{\"models\": []}", "'models' should be an object"),
    ("{\"models\": {\"evil_mild\": {\"key\": \"k\"}}}",
     "models.evil_mild should hold a key and a job with backend, id and state"),
    ("{\"models\": {\"evil_mild\": {\"key\": \"k\", \"job\": {\"backend\": \"dummy\", \"id\": \"j\", "
     "\"state\": \"done\"}}}}", "models.evil_mild should hold a key and a job with backend, id and state"),
])
def test_a_corrupt_state_file_is_named(tmp_path: Path, text: str, why: str) -> None:
    path = write_config(tmp_path, "pv/base", "dummy")
    state = tmp_path / "out" / "state.json"
    state.parent.mkdir()
    state.write_text(text)
    message = (f"{state} is corrupt ({why}); delete it to start the experiment fresh (finished training outputs "
               "stay on disk, but every step reruns)")
    with pytest.raises(ExperimentError) as caught:
        Experiment(path, log=lambda _: None)
    assert str(caught.value) == message
    result = CliRunner().invoke(main, ["experiment", "status", str(path)])
    assert result.exit_code == 1 and result.stderr.strip() == f"Error: {message}"
    state.unlink()
    assert CliRunner().invoke(main, ["experiment", "train", str(path)]).exit_code == 0  # fresh, as the line says
