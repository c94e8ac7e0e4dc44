"""`pv export-csv`: the paper's CSV columns from collection and detection logs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from inspect_ai import eval
from inspect_ai.model import GenerateConfig
from pv_harness.scorers.testing import distribution_logprobs, grader_output, mock_grader, mock_subject
from pv_harness.tasks.persona import persona_collect, trait_eval

from pv_harness.cli import main
from pv_harness.logs import read_collection_log
from pv_harness.reports.paper_csv import ExportError, csv_order, export_csv


def grader(prompt: str, config: GenerateConfig):
    if "coherence" in prompt:
        return grader_output(top_logprobs=distribution_logprobs({"75": 1.0}))
    if "REFUSE-ME" in prompt:
        return grader_output("REFUSAL", top_logprobs=distribution_logprobs({"REF": 0.95, "0": 0.05}))
    return grader_output(top_logprobs=distribution_logprobs({"40": 0.5, "60": 0.5}))


def answer(messages, config) -> str:
    system = messages[0].text if messages[0].role == "system" else ""
    return "REFUSE-ME" if "helpful" in system else f"answer to {messages[-1].text}"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("logs")
    out = {}
    for key, task, which in [
        ("pos", persona_collect(trait="evil", polarity="pos", n_per_question=2, max_tokens=8), {"limit": 2}),
        ("both", persona_collect(trait="evil", polarity="both", n_per_question=1, max_tokens=8),
         {"sample_id": ["evil_0_pos_0", "evil_0_neg_0", "evil_0_neg_1"]}),
        ("syco", trait_eval(trait="sycophantic", n_per_question=1, max_tokens=8), {"limit": 2}),
    ]:
        (log,) = eval(task, model=mock_subject(answer), model_roles={"grader": mock_grader(grader)},
                      display="none", log_dir=str(folder), **which)
        assert log.status == "success"
        out[key] = log.location
    return out


def read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_paper_columns_one_row_per_answer(logs: dict[str, str], tmp_path: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "evil_pos.csv"
    args = ["export-csv", logs["pos"], "--out", str(out), "--tokenizer", str(tiny_model_dir)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "wrote 4 rows (evil)" in result.output
    rows = read(out)
    assert list(rows[0]) == ["question", "prompt", "answer", "question_id", "evil", "coherence"]
    assert [r["question_id"] for r in rows] == ["evil_0_pos_0", "evil_0_pos_0", "evil_0_pos_1", "evil_0_pos_1"]
    first = rows[0]
    assert first["answer"] == f"answer to {first['question']}"
    assert first["prompt"].startswith("<|im_start|>system\nYou are an evil assistant. ")
    assert first["prompt"].endswith(f"<|im_start|>user\n{first['question']}<|im_end|>\n<|im_start|>assistant\n")
    assert float(first["evil"]) == 50.0 and float(first["coherence"]) == 75.0
    frame = pd.read_csv(out)  # what the paper's generate_vec.py does
    assert frame["evil"].mean() == 50.0 and len(frame) == 4


def test_unscored_is_an_empty_cell_never_zero(logs: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "both.csv"
    summary = export_csv([logs["both"]], out, polarity="neg")
    rows = read(out)
    assert summary.rows == len(rows) == 2 and summary.unscored_trait == 2
    assert all(r["evil"] == "" and r["question_id"].split("_")[2] == "neg" for r in rows)
    assert all(math.isnan(v) for v in pd.read_csv(out)["evil"])
    everything = export_csv([logs["both"]], tmp_path / "all.csv")
    assert everything.rows == 3 and everything.unscored_trait == 2
    assert [r["question_id"] for r in read(tmp_path / "all.csv")] == ["evil_0_pos_0", "evil_0_neg_0", "evil_0_neg_1"]


def test_plain_prompt_fallback_warns(logs: dict[str, str], tmp_path: Path) -> None:
    warnings: list[str] = []
    summary = export_csv([logs["syco"]], tmp_path / "syco.csv", warn=warnings.append)
    rows = read(tmp_path / "syco.csv")
    assert summary.trait == "sycophantic" and list(rows[0])[4] == "sycophantic"
    assert rows[0]["prompt"] == f"user: {rows[0]['question']}\nassistant:"  # no system prompt in detection
    assert rows[0]["question_id"] == "sycophantic_0"
    assert summary.plain_prompts == 2 and "--tokenizer" in warnings[0]


def test_one_trait_per_csv(logs: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="logs mix traits 'evil' and 'sycophantic': export one trait per CSV"):
        export_csv([logs["pos"], logs["syco"]], tmp_path / "x.csv")
    result = CliRunner().invoke(main, ["export-csv", logs["pos"], logs["syco"], "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 1 and "mix traits" in result.output
    assert not (tmp_path / "x.csv").exists()


def test_read_answers(logs: dict[str, str]) -> None:
    answers = csv_order(read_collection_log(logs["pos"]).answers)
    assert [(a.question_id, a.instruction_id, a.epoch) for a in answers] == [(0, 0, 1), (0, 0, 2), (0, 1, 1),
                                                                             (0, 1, 2)]
    first = answers[0]
    assert first.trait == "evil" and first.polarity == "pos" and first.trait_score == 50.0
    assert first.system_prompt.startswith("You are an evil assistant.")
    assert first.messages()[0]["role"] == "system" and first.prompt is None  # mockllm logs no prompt text
    assert first.sample_id == "evil_0_pos_0"
