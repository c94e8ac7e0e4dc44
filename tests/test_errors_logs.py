"""Bad logs and impossible judge modes fail with one clear line: a truncated or corrupt log names its file, a log of
another task passed to extraction says what it is, a forced logprob judge without logprobs stops, and names read
from logs cannot lead the vector file out of its folder."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from inspect_ai import eval as inspect_eval
from inspect_ai.log import read_eval_log, write_eval_log
from pv_harness.scorers.judge import JudgeConfigError, ask_grader, check_mode
from pv_harness.scorers.testing import grader_output, mock_grader, mock_subject
from pv_harness.tasks.persona import persona_collect
from pv_harness.tasks.steering_sweep import steering_sweep
from safetensors.torch import save_file

from pv_harness.cli import main
from pv_harness.logs import LogError, judged_samples, read_collection_log, read_header

UNREADABLE = "it is truncated or corrupt, or not an inspect eval log; delete it and rerun the step that wrote it"


def scores(prompt: str, config: object) -> object:
    """Trait 80 for every answer, coherence 90, as top logprobs."""
    return grader_output(top_logprobs=[("90" if "coheren" in prompt.lower() else "80", 0.0)])


@pytest.fixture(scope="module")
def collect_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real persona_collect log (pos and neg) from a mock subject and grader."""
    (log,) = inspect_eval(persona_collect(trait="evil", polarity="both", n_per_question=1, max_tokens=8),
                          model=mock_subject("An answer."), model_roles={"grader": mock_grader(scores)},
                          sample_id=["evil_0_pos_0", "evil_0_neg_0"], log_dir=str(tmp_path_factory.mktemp("logs")),
                          display="none")
    assert log.status == "success", log.error
    return Path(log.location)


@pytest.fixture
def truncated(collect_log: Path, tmp_path: Path) -> Path:
    """The first half of a real log, as a crash or a full disk leaves it."""
    data = collect_log.read_bytes()
    path = tmp_path / "cut.eval"
    path.write_bytes(data[: len(data) // 2])
    return path


def one_error_line(result: object) -> str:
    """The one error line a CLI run ended with (an exit, not an exception's traceback), after any progress lines."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert "Traceback" not in result.output and [line for line in lines if line.startswith("error:")] == lines[-1:]
    return lines[-1]


# --- unreadable logs ---------------------------------------------------------------------------------------


def test_a_truncated_log_names_its_file(truncated: Path) -> None:
    message = f"^{re.escape(str(truncated))}: cannot read this log \\(ValueError: EOCD not found\\): {UNREADABLE}$"
    with pytest.raises(LogError, match=message):
        read_header(truncated)
    with pytest.raises(LogError, match=message):
        read_collection_log(truncated)


def test_a_log_whose_samples_are_corrupt_names_its_file(collect_log: Path, tmp_path: Path) -> None:
    """A readable header but a broken sample (cut off mid-write): the stream stops with the file's name."""
    broken = tmp_path / "broken.eval"
    with zipfile.ZipFile(collect_log) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            corrupt = item.filename.startswith("samples/")
            target.writestr(item, b'{"id": "evil_0_pos_0", "inp' if corrupt else source.read(item.filename))
    assert read_header(broken).status == "success"
    with pytest.raises(LogError, match=f"^{re.escape(str(broken))}: cannot read this log \\(.+\\): {UNREADABLE}$"):
        list(judged_samples(broken))


@pytest.mark.parametrize("command", [["export-csv", "{log}", "--out", "{tmp}/x.csv"], ["extract", "{log}"],
                                     ["report", "sweep", "{log}"], ["report", "monitor", "{log}"]])
def test_every_command_that_reads_a_truncated_log_says_so_in_one_line(truncated: Path, tmp_path: Path,
                                                                      command: list[str]) -> None:
    args = [arg.format(log=truncated, tmp=tmp_path) for arg in command]
    line = one_error_line(CliRunner().invoke(main, args))
    assert line == f"error: {truncated}: cannot read this log (ValueError: EOCD not found): {UNREADABLE}"
    assert not (tmp_path / "x.csv").exists()


def test_export_csv_of_a_truncated_log_prints_no_traceback(truncated: Path, tmp_path: Path) -> None:
    """The issue's case, as a user runs it: a real `pv` process."""
    pv = Path(sys.executable).parent / "pv"
    done = subprocess.run([str(pv), "export-csv", str(truncated), "--out", str(tmp_path / "x.csv")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: {truncated}: cannot read this log (ValueError: EOCD not found): {UNREADABLE}"


# --- a log of another task ---------------------------------------------------------------------------------


def test_extract_names_a_steering_sweep_log_for_what_it_is(tiny_model_dir: Path, tmp_path: Path) -> None:
    vector = tmp_path / "evil.safetensors"
    save_file({"response_avg_diff": torch.randn(5, 64, generator=torch.Generator().manual_seed(1))}, str(vector))
    (log,) = inspect_eval(steering_sweep(trait="evil", vector=str(vector), layers="2", coefs="0,4", questions=1,
                                         max_tokens=4, temperature=0),
                          model=f"pv/{tiny_model_dir}", model_roles={"grader": mock_grader(scores)},
                          log_dir=str(tmp_path), display="none")
    assert log.status == "success", log.error
    path = Path(log.location)
    line = one_error_line(CliRunner().invoke(main, ["extract", str(path), "--out", str(tmp_path / "v.safetensors")]))
    assert line == (f"error: {path} is a pv_harness/steering_sweep log, not a collection log; pass the logs of "
                    "pv_harness/persona_collect")
    assert not (tmp_path / "v.safetensors").exists()
    assert len(read_collection_log(path).answers) == 2  # other readers (the CSV export) still take it


# --- the judge ---------------------------------------------------------------------------------------------


def test_a_forced_logprob_judge_without_logprobs_fails_instead_of_reading_text() -> None:
    calls: list[dict] = []
    grader = mock_grader(lambda prompt, config: grader_output("73"), calls=calls)
    with pytest.raises(JudgeConfigError) as info:
        asyncio.run(ask_grader("judge this", grader=grader, mode="logprob"))
    assert str(info.value) == ("judge_mode 'logprob': grader 'mockllm/model' returned no logprobs; use judge_mode=text "
                               "(or auto), or a grader that returns top_logprobs (e.g. an OpenAI model)")
    assert len(calls) == 1  # no second, text-mode call


def test_a_forced_logprob_judge_with_a_provider_without_logprobs_fails_before_any_generation() -> None:
    class Named:
        def __str__(self) -> str:
            return "anthropic/claude-sonnet-4-5"

    with pytest.raises(JudgeConfigError, match="^judge_mode 'logprob': grader 'anthropic/claude-sonnet-4-5' returns "
                                               "no logprobs; use judge_mode=text"):
        check_mode("logprob", Named())
    check_mode("auto", Named())  # auto picks text mode for it


def test_a_collection_with_a_forced_logprob_judge_without_logprobs_ends_in_that_error(tmp_path: Path) -> None:
    (log,) = inspect_eval(persona_collect(trait="evil", polarity="pos", n_per_question=1, max_tokens=8,
                                          judge_mode="logprob"),
                          model=mock_subject("An answer."),
                          model_roles={"grader": mock_grader(lambda prompt, config: grader_output("73"))},
                          limit=1, log_dir=str(tmp_path), display="none")
    assert log.status == "error"
    assert "judge_mode 'logprob': grader 'mockllm/model' returned no logprobs" in log.error.message


# --- names that become paths -------------------------------------------------------------------------------


def test_extract_refuses_a_trait_name_from_a_log_that_leaves_the_vectors_folder(collect_log: Path, tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    log = read_eval_log(str(collect_log))
    log.eval.metadata = {**log.eval.metadata, "trait": "../../escape"}
    crafted = tmp_path / "crafted.eval"
    write_eval_log(log, str(crafted))
    monkeypatch.chdir(tmp_path)
    line = one_error_line(CliRunner().invoke(main, ["extract", str(crafted), "--export-pt"]))
    assert line.startswith("error: the logs' trait '../../escape' cannot be a folder name: ")
    assert sorted(p.name for p in tmp_path.parent.iterdir() if "escape" in p.name) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted.eval"]


def test_extract_refuses_a_model_name_that_leaves_the_vectors_folder(collect_log: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_error_line(CliRunner().invoke(main, ["extract", str(collect_log), "--model", "pv/.."]))
    assert line.startswith("error: the model name '..' cannot be a folder name: ")
    assert list(tmp_path.iterdir()) == []


# --- a model name without its provider ---------------------------------------------------------------------


def test_pv_run_with_a_bare_model_name_hints_the_pv_provider(tmp_path: Path) -> None:
    """`inspect eval --model smollm2` fails inside inspect before any task or solver of ours runs (it resolves
    models first), so no hint can be added there; `pv run` checks the name itself, before any work."""
    line = one_error_line(CliRunner().invoke(main, ["run", "evil", "--model", "smollm2", "--out", str(tmp_path)]))
    assert line == ("error: --model smollm2: pv run needs a pv/ model (the vectors need its activations); "
                    "try --model pv/smollm2")
    assert list(tmp_path.iterdir()) == []
