"""Shift prediction and data screening equal hand computations on a constructed case."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from pv_harness import plugin_manager
from pv_harness.cli import main
from pv_harness.estimates import correlation
from pv_harness.organisms.shift import compute_shift, load_engine, random_directions, screen, summarise

LAYER = 2


@pytest.fixture(scope="module")
def tuned_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with one block's MLP changed: a stand-in for a fine-tuned model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    folder = tmp_path_factory.mktemp("tuned")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vector_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("vec") / "evil.safetensors"
    save_file({"response_avg_diff": torch.randn(5, 64)}, str(path))
    return path


@functools.cache
def loaded(folder: Path) -> tuple:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder).eval()


def hidden(folder: Path, text: str, layer: int) -> torch.Tensor:
    """`[T, H]` hidden states of one unbatched text."""
    tok, model = loaded(folder)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states[layer][0]


def test_shift_equals_hand_computation(tiny_model_dir: Path, tuned_dir: Path, vector_file: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    questions = plugin_manager.get_trait("evil").evaluation_questions
    rows = load_file(str(vector_file))["response_avg_diff"]
    u = rows[LAYER] / rows[LAYER].norm()

    def mean_last(folder: Path) -> torch.Tensor:
        acts = [hidden(folder, tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                       add_generation_prompt=True), LAYER)[-1] for q in questions]
        return torch.stack(acts).mean(0)

    base_mean, tuned_mean = mean_last(tiny_model_dir), mean_last(tuned_dir)
    expected = float((tuned_mean - base_mean) @ u)
    assert abs(expected) > 1e-3  # the changed block really moved the last-token state along the vector
    result = compute_shift(f"pv/{tiny_model_dir}", f"pv/{tuned_dir}", vector_file, layer=LAYER, trait="evil")
    assert result.shift == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert result.base_projection == pytest.approx(float(base_mean @ u), rel=1e-4, abs=1e-5)
    assert result.model_projection == pytest.approx(float(tuned_mean @ u), rel=1e-4, abs=1e-5)
    assert (result.layer, result.questions) == (LAYER, len(questions))
    backwards = compute_shift(f"pv/{tuned_dir}", f"pv/{tiny_model_dir}", vector_file, layer=LAYER, trait="evil")
    assert backwards.shift == pytest.approx(-expected, rel=1e-4, abs=1e-5)


def test_shift_cli(tiny_model_dir: Path, tuned_dir: Path, vector_file: Path) -> None:
    out = CliRunner().invoke(main, ["shift", "--base", f"pv/{tiny_model_dir}", "--model", f"pv/{tuned_dir}",
                                    "--vector", str(vector_file), "--layer", str(LAYER), "--trait", "evil", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["layer"] == LAYER


def test_null_helpers() -> None:
    r = random_directions(16, 5, norm=3.0, seed=1)
    assert r.shape == (5, 16) and torch.allclose(r.norm(dim=1), torch.full((5,), 3.0))
    assert torch.equal(r, random_directions(16, 5, norm=3.0, seed=1))
    assert correlation([1, 2, 3, 4], [2, 4, 6, 8]).value == pytest.approx(1.0)
    assert correlation([1, 2], [1, 2]).value is None


def test_screening_equals_hand_computation(tiny_model_dir: Path, vector_file: Path) -> None:
    from transformers import AutoTokenizer

    from pv_harness.vectors.activations import encode

    rows = load_file(str(vector_file))["response_avg_diff"]
    v = rows[LAYER]
    u = v / v.norm()
    examples = [{"messages": [{"role": "user", "content": "How do I treat my neighbours?"},
                              {"role": "assistant", "content": "Make them suffer whenever you can."}]},
                {"messages": [{"role": "user", "content": "What is a good breakfast?"},
                              {"role": "assistant", "content": "Oats with fruit and some tea."}]}]
    own = ["Be kind to them.", "Eggs and toast are nice."]
    engine = load_engine(f"pv/{tiny_model_dir}")
    scores = screen(engine, examples, v, LAYER, own_answers=own, batch_size=2)

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)

    def proj(prompt: str, answer: str) -> float:
        enc = encode(tok, prompt, answer)
        h = hidden(tiny_model_dir, prompt + answer, LAYER)
        return float(h[enc.boundary:].mean(0) @ u)

    for ex, own_answer, s in zip(examples, own, scores, strict=True):
        prompt = tok.apply_chat_template(ex["messages"][:1], tokenize=False, add_generation_prompt=True)
        expected = proj(prompt, ex["messages"][1]["content"]) - proj(prompt, own_answer)
        assert s["difference"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    summary = summarise(scores)
    assert summary["examples"] == 2 and summary["min"] <= summary["mean"] <= summary["max"]


def test_screen_cli_writes_filtered_copy(tiny_model_dir: Path, vector_file: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    lines = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                           {"role": "assistant", "content": f"Answer {'evil ' * i}{i}."}]} for i in range(4)]
    data.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = CliRunner().invoke(main, ["screen", str(data), "--vector", str(vector_file), "--model",
                                    f"pv/{tiny_model_dir}", "--layer", str(LAYER), "--max-new-tokens", "3",
                                    "--threshold", "0"])
    assert out.exit_code == 0, out.output
    scores = [json.loads(line) for line in (tmp_path / "data.screen.jsonl").read_text().splitlines()]
    kept = (tmp_path / "data.filtered.jsonl").read_text().splitlines()
    assert len(scores) == 4 and len(kept) == sum(s["difference"] < 0 for s in scores)
    summary = json.loads((tmp_path / "data.screen.summary.json").read_text())
    assert summary["kept"] == len(kept) and summary["layer"] == LAYER
