"""One monitor colour scale: centred on the baseline extraction stores with the vector, half-range the pos-neg gap
(the vector's norm without one), fixed before streaming; the terminal and the HTML colour each token the same, the
legends carry the numbers, and the question is shown above the answer."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner
from inspect_ai.log import EvalConfig, EvalDataset, EvalLog, EvalSample, EvalSpec, write_eval_log
from inspect_ai.model import ModelOutput
from inspect_ai.scorer import Score
from markupsafe import escape

from pv_harness.cli import main
from pv_harness.logs import CollectedAnswer
from pv_harness.provider.engine import Engine
from pv_harness.reports.monitor import (
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    ColourScale,
    colour,
    token_scale,
    vector_scale,
    write_monitor_report,
)
from pv_harness.vectors.extraction import extract
from pv_harness.vectors.files import VectorFile, read_baseline, read_vectors, save_vectors

ROW = [3.0, 4.0] + [0.0] * 62  # norm 5 exactly


def vector_with(tmp_path: Path, metadata: dict) -> Path:
    rows = torch.zeros(5, 64)
    rows[2] = torch.tensor(ROW)
    return save_vectors(VectorFile({"response_avg_diff": rows}, metadata), tmp_path / "evil.safetensors")


BASELINE = {"baseline": {"kind": "response_avg_diff", "neg": [0.0, 0.0, 1.5, 0.0, 0.0],
                         "pos": [0.0, 0.0, 5.5, 0.0, 0.0]}}


def test_colour_by_hand() -> None:
    scale = ColourScale(1.0, 2.0, "c", "r")
    assert (scale.low, scale.high) == (-1.0, 3.0)
    assert colour(1.0, scale) == NEUTRAL and colour(3.0, scale) == POSITIVE and colour(-1.0, scale) == NEGATIVE
    assert colour(1.5, scale) == (245, 201, 201)  # a quarter of the way to red: 255 - 41/4, 255 - 216/4, 255 - 215/4
    assert colour(0.5, scale) == (199, 221, 236)  # a quarter of the way to blue: 255 - 224/4, 255 - 136/4, 255 - 75/4
    assert colour(40.0, scale) == POSITIVE and colour(-40.0, scale) == NEGATIVE  # clipped
    assert colour(None, scale) == NEUTRAL and colour(float("nan"), scale) == NEUTRAL
    assert colour(9.0, ColourScale(1.0, 0.0, "c", "r")) == NEUTRAL


def test_token_scale_is_the_nearest_rank_95th_percentile() -> None:
    values = [float(i) for i in range(1, 21)] + [100.0, float("nan")]  # 21 finite: rank ceil(0.95 * 21) = 20
    assert token_scale(values).half_range == 20.0 and token_scale(values).centre == 0.0
    assert token_scale([-3.0, 1.0]).half_range == 3.0  # rank ceil(0.95 * 2) = 2
    assert token_scale([]).half_range == 0.0


def test_vector_scale_uses_the_stored_baseline(tmp_path: Path) -> None:
    scale = vector_scale(vector_with(tmp_path, BASELINE), 2)
    assert (scale.centre, scale.half_range) == (1.5, 4.0) and "neg answers' mean" in scale.centre_from


def test_an_old_file_centres_at_zero_with_the_vector_norm(tmp_path: Path) -> None:
    path = vector_with(tmp_path, {"model": "tiny"})
    assert read_baseline(read_vectors(path).metadata, "response_avg_diff", 2) is None
    scale = vector_scale(path, 2)
    assert (scale.centre, scale.half_range) == (0.0, 5.0) and "no baseline stored" in scale.centre_from
    pt = tmp_path / "evil.pt"
    torch.save(read_vectors(path).tensors["response_avg_diff"], pt)
    assert (vector_scale(pt, 2).centre, vector_scale(pt, 2).half_range) == (0.0, 5.0)
    assert "0: no baseline stored with the vector" in vector_scale(pt, 2).legend()


def test_extraction_stores_each_sides_mean_projection(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Per layer, the mean over each side's kept answers of (response mean . unit vector)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pv_harness.vectors import activations

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    engine = Engine(model, tokenizer)
    answers = [CollectedAnswer(trait="grumpy", polarity=p, question_id=q, instruction_id=0, epoch=1,
                               system_prompt=f"You are a {p} assistant.", question=f"Question {q}?",
                               answer=f"{'Ugh' if p == 'pos' else 'Sure'}! Answer {q}.",
                               trait_score=90.0 if p == "pos" else 10.0, coherence=90.0)
               for p in ("pos", "neg") for q in range(4)]
    result = extract(answers, model_name="tiny", engine=engine, out=tmp_path / "v.safetensors", trait="grumpy",
                     min_pairs=1, holdout=0.25, batch_size=2, log=lambda _: None)
    vector = result.vectors.tensors["response_avg_diff"]
    stored = read_vectors(result.path).metadata["baseline"]
    assert stored["kind"] == "response_avg_diff" and len(stored["neg"]) == len(stored["pos"]) == vector.shape[0]
    for side in ("neg", "pos"):
        pooled = []
        for a in answers:
            if a.polarity == side:
                encoded = activations.encode(tokenizer, engine.chat_text(a.messages(True)), a.answer)
                ((_, rows),) = activations.pool(model, [encoded], pad_token_id=engine.pad_id)
                pooled.append(rows["response_avg"][0])
        for layer in range(vector.shape[0]):
            unit = vector[layer] / vector[layer].norm()
            hand = sum(float(p[layer] @ unit) for p in pooled) / len(pooled)
            assert stored[side][layer] == pytest.approx(hand, abs=1e-4)
    scale = vector_scale(result.path, 2)
    assert scale.centre == stored["neg"][2] and scale.half_range == abs(stored["pos"][2] - stored["neg"][2])


ANSI = re.compile(r"\x1b\[48;2;(\d+);(\d+);(\d+)m\x1b\[38;2;0;0;0m(.*?)\x1b\[0m", re.S)
SPAN = re.compile(r'<span class="tok" style="background:rgb\((\d+),(\d+),(\d+)\)"')


@pytest.mark.parametrize("stored", [True, False])
def test_terminal_and_html_colour_every_token_alike(tiny_model_dir: Path, tmp_path: Path, stored: bool) -> None:
    path = vector_with(tmp_path, BASELINE if stored else {})
    runner = CliRunner()
    result = runner.invoke(main, ["monitor", "Tell me <about> it", "--vector", str(path), "--layer", "2", "--model",
                                  f"pv/{tiny_model_dir}", "--max-tokens", "6", "--html", str(tmp_path / "m.html")],
                           color=True)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert click.unstyle(out).startswith("Question: Tell me <about> it\n")
    terminal = [tuple(map(int, m.groups()[:3])) for m in ANSI.finditer(out)]
    page = (tmp_path / "m.html").read_text()
    html = [tuple(map(int, m.groups())) for m in SPAN.finditer(page)]
    assert html and terminal == html  # same scale, same function, token for token
    scale = vector_scale(path, 2)
    assert scale.legend() in result.stderr
    assert (f"{scale.low:+.3f} or less: away from the trait" in page and f"{scale.high:+.3f} or more: towards" in page
            and f"centre {scale.centre:+.3f}: {escape(scale.centre_from)}" in page)
    assert '<div class="question"><b>Question:</b> Tell me &lt;about&gt; it</div>' in page


def test_log_page_legend_has_the_stored_scale_and_each_question(tmp_path: Path) -> None:
    vector = vector_with(tmp_path, BASELINE)
    output = ModelOutput.from_content("pv/tiny", "ab")
    output.metadata = {"pv_monitor": [{"layer": 2, "vector": str(vector), "kind": "response_avg_diff",
                                       "tokens": ["a", "b"], "projections": [5.5, 2.5], "prompt_last": 0.5,
                                       "response_mean": 4.0}]}
    sample = EvalSample(id=1, epoch=1, input="Why <rain>?", target="", output=output,
                        scores={"trait_judge": Score(value=70.0)})
    spec = EvalSpec(created="2025-01-01T00:00:00", task="trait_eval", model="pv/tiny", config=EvalConfig(),
                    dataset=EvalDataset(samples=1, sample_ids=[1]), metadata={"trait": "evil"})
    write_eval_log(EvalLog(status="success", eval=spec, samples=[sample]), str(tmp_path / "m.eval"))
    page = write_monitor_report(tmp_path / "m.eval", tmp_path / "m.html").read_text()
    assert "layer 2:" in page and "-2.500 or less: away from the trait" in page and "+5.500 or more: towards" in page
    assert "centre +1.500: the neg answers&#39; mean projection; half-range 4.000" in page
    assert '<div class="question"><b>Question:</b> Why &lt;rain&gt;?</div>' in page
    # 5.5 is the pos answers' mean: full red; 2.5 is a quarter of the way from the neg mean to it
    assert ('<span class="tok" style="background:rgb(214,39,40)" title="+5.500">a</span>'
            '<span class="tok" style="background:rgb(245,201,201)" title="+2.500">b</span>') in page
