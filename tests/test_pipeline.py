"""steering_sweep, the sweep report, the monitor report and `pv run`, end to end on a tiny model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from inspect_ai import eval as inspect_eval
from inspect_ai.log import list_eval_logs, read_eval_log
from markupsafe import escape
from pv_harness.scorers.testing import grader_output, mock_grader
from pv_harness.tasks.steering_sweep import steering_sweep

from pv_harness.cli import main
from pv_harness.pipeline import RunConfig, fallback_layer, run
from pv_harness.reports.sweep import choose_layer, summarise, sweep_frame


def hashed_judge():
    """Trait 90 or 10 by a hash of the answer (so some pos and some neg answers pass); coherence 90."""

    def reply(prompt: str, config):
        if "coheren" in prompt.lower():
            return grader_output(top_logprobs=[("90", 0.0)])
        digest = hashlib.sha256(prompt.encode()).digest()[0]
        return grader_output(top_logprobs=[("90" if digest % 2 else "10", 0.0)])

    return mock_grader(reply)


@pytest.fixture(scope="module")
def vector_file(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random vector file shaped for the tiny model."""
    import torch
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("vec") / "evil.safetensors"
    torch.manual_seed(1)
    save_file({"response_avg_diff": torch.randn(5, 64)}, str(path))
    return path


def test_steering_sweep_end_to_end(tiny_model_dir: Path, vector_file: Path, tmp_path: Path) -> None:
    (log,) = inspect_eval(
        steering_sweep(trait="evil", vector=str(vector_file), layers="1,3", coefs=[0, 8], questions=2, max_tokens=6,
                       temperature=0),
        model=f"pv/{tiny_model_dir}", model_roles={"grader": hashed_judge()}, log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error
    # each question's unsteered baseline once (2), then 2 layers x coef 8 x 2 questions
    assert len(log.samples) == 2 + 2 * 2
    steered = {(s.metadata["layer"], s.metadata["coef"], s.metadata["question_id"]): s.output.completion
               for s in log.samples}
    assert sorted(k for k in steered if k[0] is None) == [(None, 0.0, 0), (None, 0.0, 1)]
    assert all(e.config.extra_body is None for s in log.samples if s.metadata["layer"] is None
               for e in s.events if e.event == "model" and e.role is None)  # the baseline is not steered
    # a large coef changes greedy output
    assert steered[(1, 8.0, 0)] != steered[(None, 0.0, 0)] or steered[(3, 8.0, 0)] != steered[(None, 0.0, 0)]
    metrics = log.results.scores[0].metrics
    assert "L1 c8_mean" in metrics and "baseline_mean" in metrics and "L3 c0_mean" not in metrics
    assert log.eval.metadata["layers"] == [1, 3]

    frame, meta = sweep_frame(log.location)
    assert len(frame) == 8 and meta["trait"] == "evil"
    result = CliRunner().invoke(main, ["report", "sweep", log.location, "--out", str(tmp_path / "s.html"),
                                       "--floor", "50"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "s.html").exists() and (tmp_path / "plotly.min.js").exists()
    choice = json.loads(vector_file.with_suffix(".layer.json").read_text())
    assert choice["layer"] in (1, 3) and choice["coef"] == 8.0 and choice["coherence_floor"] == 50


def test_choose_layer_respects_the_coherence_floor() -> None:
    frame = pd.DataFrame([
        # layer, coef, trait, coherence
        (10, 0.0, 5.0, 95.0), (10, 2.0, 60.0, 90.0), (10, 4.0, 95.0, 40.0),
        (20, 0.0, 5.0, 95.0), (20, 2.0, 70.0, 80.0), (20, 4.0, 80.0, 74.0),
    ], columns=["layer", "coef", "trait", "coherence"])
    summary = summarise(frame)
    best = choose_layer(summary, floor=75)
    assert (best["layer"], best["coef"]) == (20, 2.0)
    assert choose_layer(summary, floor=99) is None  # coef 0 never counts


def test_without_a_choice_pv_run_monitors_a_swept_layer_never_an_untried_one() -> None:
    diagnostics = [{"layer": 0}, {"layer": 1, "heldout_auroc": 0.6}, {"layer": 2, "heldout_auroc": 0.95},
                   {"layer": 3, "heldout_auroc": 0.7}, {"layer": 4, "heldout_auroc": float("nan")}]
    assert fallback_layer(diagnostics, [1, 3, 4]) == (3, True)  # layer 2 is best but was not swept
    assert fallback_layer(diagnostics, [0, 4]) == (4, False)  # no finite AUROC among the swept: the middle one


RESULT_KEYS = {"trait", "model", "judge", "layer", "coef", "auroc", "auroc_text", "auroc_n", "steering", "monitor_r",
               "monitor_r_ci", "monitor_n", "seconds"}


def test_pv_run_end_to_end_and_resume(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = RunConfig(trait="evil", model=f"pv/{tiny_model_dir}", grader=hashed_judge(), limit=10, max_tokens=6,
                    out=tmp_path, filter="independent", min_pairs=1, layers=[2], coefs=[-4.0, 0.0, 4.0],
                    sweep_questions=2, monitor_questions=2, seed=7, display="none")
    result = run(cfg, log=lambda _: None)
    assert result.vector.exists() and result.report.exists()
    page = result.report.read_text()
    assert result.layer in cfg.layers and str(escape(result.layer_note)) in page  # never a layer the sweep skipped
    for name in ("extraction", "steering sweep", "monitoring"):
        assert name in page and result.pages[name].exists()
    assert "inspect view --log-dir" in page

    results = json.loads(result.results.read_text())
    assert RESULT_KEYS <= results.keys() and results["trait"] == "evil" and results["judge"] == "mockllm/model"
    assert results["layer"] in (None, 2) and results["monitor_layer"] == 2
    assert {(s["layer"], s["coef"]) for s in results["steering"]} == {(2, -4.0), (2, 0.0), (2, 4.0)}
    assert all(s["n"] == 2 for s in results["steering"])
    assert results["monitor_n"] == 6  # 2 questions x pos, neg and no persona prompt
    sweep = pd.read_csv(result.out / "sweep.csv")
    assert sweep[["layer", "coef", "n"]].values.tolist() == [[2, -4.0, 2], [2, 0.0, 2], [2, 4.0, 2]]
    monitor = pd.read_csv(result.out / "monitor.csv")
    assert len(monitor) == 6 and set(monitor["strength"]) == {"pos", "neg", "none"}
    collection = pd.read_csv(result.out / "evil.collection.csv")
    assert list(collection.columns) == ["question", "prompt", "answer", "question_id", "evil", "coherence"]
    assert len(collection) == 20

    monitor_log = read_eval_log(list_eval_logs(str(result.log_dir / "monitor"))[0], header_only=False)
    monitored = monitor_log.samples[0].output.metadata["pv_monitor"][0]
    assert monitored["layer"] == result.layer and len(monitored["projections"]) == len(monitored["tokens"])

    logs_before = sorted(p.name for p in result.log_dir.rglob("*.eval"))
    vector_time = result.vector.stat().st_mtime_ns
    again = run(cfg, log=lambda _: None)
    assert sorted(p.name for p in again.log_dir.rglob("*.eval")) == logs_before  # nothing re-run
    assert again.vector.stat().st_mtime_ns == vector_time  # extraction skipped


def test_pv_run_command_writes_its_files_and_a_second_run_does_nothing(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`pv run` as typed, on the tiny model judging itself (the offline default: the likelihood judge)."""
    model = f"pv/{tiny_model_dir}"
    args = ["run", "evil", "--model", model, "--limit", "2", "--max-tokens", "4", "--out", str(tmp_path),
            "--threshold", "0", "--coherence", "0", "--filter", "independent", "--min-pairs", "1",
            "--layers", "2", "--coefs", "0,4", "--sweep-questions", "1", "--monitor-questions", "1", "--seed", "0"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    out = tmp_path / f"evil-{tiny_model_dir.name}"
    vector = out / "vectors" / "evil.safetensors"
    logs = out / "logs"
    lines = first.stdout.splitlines()
    assert lines[-6:-5] == [f"logs:    {logs}"] and lines[-5:-4] == [f"vector:  {vector}"]
    assert lines[-3:] == [f"results: {out / 'results.json'}", f"report:  {out / 'report.html'}",
                          f"view the logs: inspect view --log-dir {logs}"]
    chosen = vector.with_suffix(".layer.json").exists()  # the sweep's choice, written only when a setting qualified
    assert lines[-4].startswith("layer:   layer 2, chosen by the sweep" if chosen
                                else "layer:   no layer chosen: "), lines[-4]
    assert chosen or lines[-4].endswith("monitored at swept layer 2 (the best held-out AUROC of the swept layers)") \
        or lines[-4].endswith("monitored at swept layer 2 (the middle one swept)")
    for page in ("report.html", "sweep.html", "monitor.html", "vectors/evil.report.html", "results.json",
                 "sweep.csv", "monitor.csv", "evil.collection.csv"):
        assert (out / page).is_file(), page
    assert {step: len(list((logs / step).glob("*.eval"))) for step in ("collect", "sweep", "monitor")} == {
        "collect": 2, "sweep": 1, "monitor": 1}
    assert f"note: Likelihood judge on {model}:" in first.stderr
    collect_log = read_eval_log(str(next((logs / "collect").glob("*.eval"))), header_only=True)
    assert collect_log.eval.task_args["judge_mode"] == "likelihood"
    results = json.loads((out / "results.json").read_text())
    assert results["judge"] == f"{model} (likelihood)"

    written = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*") if p.suffix == ".eval")
    vector_time = vector.stat().st_mtime_ns
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0, second.output
    assert "[2/5] vectors up to date" in second.stderr
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*") if p.suffix == ".eval") == written
    assert vector.stat().st_mtime_ns == vector_time


def test_pv_run_command_fails_in_one_line() -> None:
    result = CliRunner().invoke(main, ["run", "no_such_trait", "--model", "pv/unused"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("error: trait 'no_such_trait': unknown trait; registered traits: ")
    assert result.stderr.count("\n") == 1


@pytest.mark.smollm2
def test_pv_run_on_the_embedded_model_shows_each_effect_in_its_direction(tmp_path: Path) -> None:
    """The main job for real, at a small size: SmolLM2 judging itself by likelihood (the demo's defaults).

    Each effect the demo reports must point the right way: the judge scores pos answers above neg ones, and at
    the swept layer the trait score rises with the steering coefficient (negative below unsteered below positive).
    """
    from .conftest import smollm2_dir

    smollm2_dir()
    cfg = RunConfig(trait="evil", model="pv/smollm2", limit=20, max_tokens=24, out=tmp_path, layers=[16],
                    coefs=[-4.0, 0.0, 2.0], sweep_questions=5, monitor_questions=4, seed=0, display="none")
    result = run(cfg, log=lambda _: None)
    from pv_harness.vectors.files import read_vectors

    vectors = read_vectors(result.vector)
    assert vectors.tensors["response_avg_diff"].shape == (31, 576) and vectors.metadata["model"] == "pv/smollm2"
    results = json.loads(result.results.read_text())
    assert results["judge"] == "pv/smollm2 (likelihood)" and results["monitor_n"] == 12
    collection = results["collection"]
    assert collection["pos"]["trait"] > collection["neg"]["trait"], collection
    trait = {s["coef"]: s["trait"] for s in results["steering"] if s["layer"] == 16}
    assert trait[-4.0] < trait[0.0] < trait[2.0], trait
    assert results["steering_effect"]["effect"] > 0 and results["auroc_n"] > 0
