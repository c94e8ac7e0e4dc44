"""Extraction from real collection logs: persona_collect through inspect, then `pv extract`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from inspect_ai import eval as inspect_eval
from pv_harness.scorers.testing import grader_output, mock_grader, mock_subject
from pv_harness.tasks.persona import persona_collect

from pv_harness.cli import main
from pv_harness.logs import LogError, find_collection_logs, read_collection_log
from pv_harness.organisms.training import load_dataset
from pv_harness.vectors.extraction import extract_from_logs
from pv_harness.vectors.files import read_vectors


def judge(trait_score: int):
    """Trait score fixed per run; coherence always 90."""
    return mock_grader(lambda prompt, config: grader_output(
        top_logprobs=[("90" if "coheren" in prompt.lower() else str(trait_score), 0.0)]))


@pytest.fixture(scope="module")
def collection_logs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    log_dir = tmp_path_factory.mktemp("logs")
    for polarity, score in (("pos", 85), ("neg", 15)):
        (log,) = inspect_eval(
            persona_collect(trait="evil", polarity=polarity, n_per_question=1, max_tokens=6),
            model=f"pv/{tiny_model_dir}", model_roles={"grader": judge(score)}, limit=6, log_dir=str(log_dir),
            display="none",
        )
        assert log.status == "success", log.error
    return log_dir


def test_reads_collection_logs(collection_logs: Path) -> None:
    logs = find_collection_logs(collection_logs, "evil")
    assert len(logs) == 2
    read = [read_collection_log(p) for p in logs]
    assert {r.polarity for r in read} == {"pos", "neg"}
    answers = [a for r in read for a in r.answers]
    assert len(answers) == 12
    assert {a.trait_score for a in answers} == {85.0, 15.0} and {a.coherence for a in answers} == {90.0}
    pos = next(a for a in answers if a.polarity == "pos")
    assert pos.system_prompt.startswith("You are an evil assistant.")
    assert pos.question_id == 0 and pos.epoch == 1


def test_collection_logs_are_found_by_any_name_of_their_model(collection_logs: Path, tiny_model_dir: Path) -> None:
    """The logs say `pv/<folder>`; the folder itself, `hf/<folder>` and `<folder>/` name the same weights."""
    for name in (f"pv/{tiny_model_dir}", str(tiny_model_dir), f"hf/{tiny_model_dir}", f"{tiny_model_dir}/"):
        assert len(find_collection_logs(collection_logs, "evil", model=name)) == 2, name
    with pytest.raises(LogError, match="for model pv/other"):
        find_collection_logs(collection_logs, "evil", model="pv/other")


def test_extract_from_log_dir(collection_logs: Path, tmp_path: Path) -> None:
    out = tmp_path / "evil.safetensors"
    result = extract_from_logs(log_dir=collection_logs, trait="evil", out=out, min_pairs=3, log=lambda _: None)
    assert result.selection.pairs == 6
    vf = read_vectors(out)
    assert vf.tensors["response_avg_diff"].shape == (5, 64)
    assert vf.metadata["trait"] == "evil" and vf.metadata["model"].startswith("pv/")
    assert len(vf.metadata["source_logs"]) == 2 and vf.metadata["judge"] == "mockllm/model"
    assert out.with_suffix(".report.html").exists()


def test_cli_extract_and_vectors(collection_logs: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    logs = find_collection_logs(collection_logs, "evil")
    out = tmp_path / "v.safetensors"
    result = runner.invoke(main, ["extract", *logs, "--out", str(out), "--min-pairs", "3", "--export-pt"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "evil_response_avg_diff.pt").exists()
    info = runner.invoke(main, ["vectors", "info", str(out)])
    assert info.exit_code == 0 and "response_avg_diff" in info.output and "paired" in info.output
    stored = read_vectors(out).metadata["baseline"]
    row = next(line.split() for line in info.output.splitlines() if line.split()[:1] == ["2"])
    assert row[-2:] == [f"{stored['neg'][2]:.3f}", f"{stored['pos'][2]:.3f}"]  # neg and pos mean projection
    pt = runner.invoke(main, ["vectors", "compare", str(out), str(tmp_path / "evil_response_avg_diff.pt"),
                              "--html", str(tmp_path / "cmp.html")])
    assert pt.exit_code == 0, pt.output
    assert "1.000" in pt.output  # a file and its own export point the same way
    too_few = runner.invoke(main, ["extract", *logs, "--out", str(tmp_path / "x.safetensors"), "--min-pairs", "50"])
    assert too_few.exit_code == 2 and "only 6 pos and 6 neg" in too_few.output
    assert not (tmp_path / "x.safetensors").exists()


def test_training_data_and_extraction_use_the_same_collection(tmp_path: Path) -> None:
    """The newest pos and neg logs of the extraction questions; an older run and an `eval` run are left out."""
    judged = mock_grader(lambda prompt, config: grader_output(
        top_logprobs=[("10" if "neg answer" in prompt and "coheren" not in prompt.lower() else "90", 0.0)]))
    for polarity, answer, version in [("pos", "old pos answer", "extract"), ("pos", "eval pos answer", "eval"),
                                      ("pos", "new pos answer", "extract"), ("neg", "new neg answer", "extract")]:
        (log,) = inspect_eval(persona_collect(trait="evil", polarity=polarity, version=version, n_per_question=1,
                                              max_tokens=8),
                              model=mock_subject(answer), model_roles={"grader": judged}, limit=2,
                              log_dir=str(tmp_path), display="none")
        assert log.status == "success", log.error
    used = find_collection_logs(tmp_path, "evil")
    assert sorted({a.answer for path in used for a in read_collection_log(path).answers}) == [
        "new neg answer", "new pos answer"]
    severe = load_dataset("collected", "evil", "severe", log_dir=str(tmp_path))
    baseline = load_dataset("collected", "evil", "baseline", log_dir=str(tmp_path))
    assert [e["messages"][-1]["content"] for e in severe] == ["new pos answer"] * 2
    assert [e["messages"][-1]["content"] for e in baseline] == ["new neg answer"] * 2


def test_extraction_runs_float32_unless_asked(collection_logs: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Generation may default to bf16 on this CPU; extraction stays float32 (the paper's vectors) by default."""
    from pv_harness.provider import cpu

    monkeypatch.delenv(cpu.DTYPE_ENV, raising=False)
    monkeypatch.setattr(cpu, "native_bf16", lambda: True)
    default = extract_from_logs(log_dir=collection_logs, trait="evil", out=tmp_path / "a.safetensors", min_pairs=3,
                                log=lambda _: None)
    assert read_vectors(default.path).metadata["dtype"] == "float32"
    logs = find_collection_logs(collection_logs, "evil")
    out = tmp_path / "b.safetensors"
    result = CliRunner().invoke(main, ["extract", *logs, "--out", str(out), "--min-pairs", "3", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert read_vectors(out).metadata["dtype"] == "bfloat16"


def test_extraction_warns_when_the_model_did_not_write_the_logs(collection_logs: Path, tiny_model_dir: Path,
                                                                tmp_path: Path) -> None:
    logs = find_collection_logs(collection_logs, "evil")
    for same in (str(tiny_model_dir), f"hf/{tiny_model_dir}", f"pv/{tiny_model_dir}/"):  # one model, other names
        lines: list[str] = []
        extract_from_logs(logs, model=same, out=tmp_path / "same.safetensors", min_pairs=3, log=lines.append)
        assert not [line for line in lines if line.startswith("warning")], lines
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    result = CliRunner().invoke(main, ["extract", *logs, "--model", f"pv/{other}", "--out",
                                       str(tmp_path / "other.safetensors"), "--min-pairs", "3"])
    assert result.exit_code == 0, result.output  # a warning, not a refusal
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert warnings == [f"warning: extracting with pv/{other}, but the logs were written by pv/{tiny_model_dir}: a "
                        "persona vector is meant to come from the model that wrote the answers (pass that model, "
                        "or drop --model)"]
