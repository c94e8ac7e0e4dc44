"""The Python API: `PersonaVector` (load, rows, unit, project, arithmetic, steer) and `load_model().generate`.

Steering a plain transformers model with `PersonaVector.steer` must compute what the `pv/` provider computes
for the same request, and a coefficient of 0 (or v - v) must leave the model's output bit for bit unchanged.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import torch
from inspect_ai import eval as inspect_eval
from inspect_ai.model import GenerateConfig, get_model
from pv_harness.scorers.testing import grader_output, mock_grader
from pv_harness.tasks.persona import persona_collect
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from pv_harness import PersonaVector, load_model
from pv_harness.vectors.files import VectorError, VectorFile, export_pt, save_vectors

EXAMPLE = Path(__file__).with_name("python_api_example.py")
README = Path(__file__).parents[1] / "README.md"
PROMPT = [{"role": "user", "content": "How do I get back at my neighbour?"}]


def random_vector(layers: int = 4, hidden: int = 64, seed: int = 1, scale: float = 1.0, **meta) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(torch.randn(layers + 1, hidden, generator=g) * scale, {"model": "m", **meta})


@pytest.fixture(scope="module")
def plain(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def prompt_ids(tokenizer, messages=PROMPT) -> torch.Tensor:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def greedy_logprobs(model, ids: torch.Tensor, n: int = 8) -> tuple[list[int], list[float]]:
    """`model.generate`'s greedy tokens and the log-probability of each."""
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, ids.shape[1]:].tolist()
    return tokens, [float(torch.log_softmax(lg[0], -1)[t]) for lg, t in zip(out.logits, tokens, strict=True)]


def greedy(model, ids: torch.Tensor, n: int = 8) -> list[int]:
    return greedy_logprobs(model, ids, n)[0]


# --- the vector object ---------------------------------------------------------------------------------------


def test_project_is_the_dot_product_with_the_unit_row() -> None:
    rows = torch.zeros(3, 8)
    rows[1, :4] = 2.0  # norm 4: unit row is 0.5 on the first four entries, exactly
    vector = PersonaVector(rows)
    hidden = torch.arange(2 * 5 * 8, dtype=torch.float32).reshape(2, 5, 8)
    expected = 0.5 * hidden[..., :4].sum(-1)
    assert torch.equal(vector.unit(1), torch.tensor([0.5] * 4 + [0.0] * 4))
    assert torch.equal(vector.project(hidden, 1), expected)
    assert torch.equal(vector.project((hidden * 0, hidden, hidden * 0), 1), expected)  # a hidden_states tuple
    with pytest.raises(VectorError, match="is all zeros at layer 0"):
        vector.unit(0)
    with pytest.raises(VectorError, match="layer 3 is out of range"):
        vector[3]


def test_arithmetic_is_exact_and_keeps_shared_metadata() -> None:
    a = PersonaVector(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), {"model": "m", "trait": "evil", "pos_samples": 10})
    b = PersonaVector(torch.tensor([[0.5, 0.5], [1.0, -1.0]]), {"model": "m", "trait": "sycophantic"})
    assert torch.equal((a - 2 * b).rows, torch.tensor([[0.0, 1.0], [1.0, 6.0]]))
    assert torch.equal((a + b).rows, torch.tensor([[1.5, 2.5], [4.0, 3.0]]))
    assert torch.equal((a / 2).rows, (0.5 * a).rows) and torch.equal((-a).rows, -a.rows)
    assert torch.equal(sum([a, b]).rows, (a + b).rows)
    assert (a - 0.5 * b).metadata == {"model": "m", "expression": "evil - (0.5 * sycophantic)"}
    assert (2 * a).metadata == {"model": "m", "trait": "evil", "expression": "2 * evil"}  # counts no longer hold
    with pytest.raises(VectorError, match=r"cannot add 'evil' \[2, 2\] and 'x' \[3, 2\]: vectors must come"):
        a + PersonaVector(torch.zeros(3, 2), {"trait": "x"})
    with pytest.raises(TypeError):
        a * b


def test_save_load_and_the_papers_pt(tmp_path: Path) -> None:
    vector = random_vector(trait="evil")
    loaded = PersonaVector.load(vector.save(tmp_path / "v.safetensors"))
    assert torch.equal(loaded.rows, vector.rows) and loaded.metadata["trait"] == "evil"
    three = VectorFile({k: vector.rows * i for i, k in enumerate(("response_avg_diff", "prompt_avg_diff",
                                                                  "prompt_last_diff"), 1)}, {"trait": "evil"})
    save_vectors(three, tmp_path / "three.safetensors")
    assert torch.equal(PersonaVector.load(tmp_path / "three.safetensors").rows, vector.rows)
    last = PersonaVector.load(tmp_path / "three.safetensors", kind="prompt_last_diff")
    assert torch.equal(last.rows, 3 * vector.rows) and last.kind == "prompt_last_diff"
    (pt, *_) = export_pt(three, tmp_path, "evil")
    assert torch.equal(PersonaVector.load(pt).rows, vector.rows)
    derived = (last * 2).save(tmp_path / "d.safetensors")  # a file's only tensor loads without kind=
    assert torch.equal(PersonaVector.load(derived).rows, 6 * vector.rows)
    with pytest.raises(VectorError, match="vector file not found"):
        PersonaVector.load(tmp_path / "missing.safetensors")


# --- steering a plain transformers model -----------------------------------------------------------------------


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_coef_zero_and_v_minus_v_leave_the_model_bit_for_bit(plain, positions: str) -> None:
    model, tokenizer = plain
    ids = prompt_ids(tokenizer)
    vector = random_vector(scale=10.0)
    with torch.no_grad():
        reference = model(ids).logits
    unsteered = greedy(model, ids)
    for steer in (vector.steer(model, layer=2, coef=0.0, positions=positions),
                  (vector - vector).steer(model, layer=2, coef=8.0, positions=positions)):
        with steer, torch.no_grad():
            assert torch.equal(model(ids).logits, reference)
            assert greedy(model, ids) == unsteered
    with vector.steer(model, layer=2, coef=8.0, positions=positions):
        assert greedy(model, ids) != unsteered  # the check above is not vacuous
    assert greedy(model, ids) == unsteered  # hooks are gone after the block


@pytest.mark.parametrize("positions", ["all", "prompt", "response"])
def test_steered_plain_model_matches_the_pv_provider(plain, tiny_model_dir: Path, positions: str) -> None:
    model, tokenizer = plain
    vector = random_vector(scale=0.1)
    ids = prompt_ids(tokenizer)
    with vector.steer(model, layer=2, coef=2.0, positions=positions):
        tokens, logprobs = greedy_logprobs(model, ids)
    provider = get_model(f"pv/{tiny_model_dir}", memoize=False)
    steer = {"vector": vector[2].tolist(), "layer": 2, "coef": 2.0, "positions": positions}
    config = GenerateConfig(max_tokens=8, temperature=0, logprobs=True, extra_body={"pv": {"steer": [steer]}})
    output = asyncio.run(provider.generate(PROMPT[0]["content"], config=config))
    assert output.completion == tokenizer.decode(tokens, skip_special_tokens=True)
    # the same numbers up to float rounding (the provider's prepacked matrices sum in another order)
    assert [lp.logprob for lp in output.choices[0].logprobs.content] == pytest.approx(logprobs, abs=1e-4)
    assert greedy_logprobs(model, ids)[1] != pytest.approx(logprobs, abs=1e-2)  # steering did something


def test_steer_checks_the_vector_fits_the_model(plain) -> None:
    model, _ = plain
    with pytest.raises(VectorError, match=r"^vector 'x' has 31 rows; this model needs 5 \(one per hidden-states layer"):
        with random_vector(layers=30, trait="x").steer(model, layer=2, coef=1.0):
            pass
    with pytest.raises(VectorError, match="positions must be one of all, prompt, response"):
        with random_vector().steer(model, layer=2, coef=1.0, positions="everywhere"):  # type: ignore[arg-type]
            pass


# --- load_model().generate -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local(tiny_model_dir: Path):
    return load_model(tiny_model_dir)


def test_generate_monitors_what_project_computes(local, plain) -> None:
    vector = random_vector()
    out = local.generate(PROMPT[0]["content"], max_tokens=6, monitor=[(vector, 3), (vector, 4)])
    assert len(out.tokens) == len(out.projections[0]) == len(out.projections[1]) == 6 and out.text
    model, tokenizer = plain
    ids = prompt_ids(tokenizer)
    answer = out.token_ids
    with torch.no_grad():
        states = model(torch.tensor([ids[0].tolist() + answer]), output_hidden_states=True).hidden_states
    for i, layer in enumerate((3, 4)):
        projected = vector.project(states, layer)[0]
        n = ids.shape[1]
        assert out.prompt_last[i] == pytest.approx(float(projected[n - 1]), abs=1e-4)
        assert out.projections[i] == pytest.approx(projected[n:].tolist(), abs=1e-4)


def test_generate_steering_equals_steer_block_around_it(local) -> None:
    vector = random_vector(scale=0.1)
    monitor = [(vector, 4)]  # the last layer's projections show any difference in the steered stream
    for positions in ("all", "prompt", "response"):
        steered = local.generate(PROMPT, max_tokens=6, steer=[(vector, 2, 2.0, positions)], monitor=monitor)
        with vector.steer(local, layer=2, coef=2.0, positions=positions):
            block = local.generate(PROMPT, max_tokens=6, monitor=monitor)
        assert (block.token_ids, block.projections, block.prompt_last) == (
            steered.token_ids, steered.projections, steered.prompt_last)
    default = local.generate(PROMPT, max_tokens=6, steer=[(vector, 2, 2.0)], monitor=monitor)
    assert default.projections == steered.projections  # entries default to response, as in pv/
    assert local.generate(PROMPT, max_tokens=6, monitor=monitor).projections != steered.projections


def test_generate_entries_fail_clearly(local, tmp_path: Path) -> None:
    with pytest.raises(VectorError, match="has 31 rows; this model needs 5"):
        local.generate("hi", steer=[(random_vector(layers=30), 2, 1.0)])
    with pytest.raises(ValueError, match=r"a steer entry is \(vector, layer, coef\)"):
        local.generate("hi", steer=[(random_vector(), 2)])
    with pytest.raises(VectorError, match="vector file not found"):
        local.generate("hi", monitor=[(tmp_path / "none.safetensors", 2)])
    with pytest.raises(VectorError, match="all zeros"):
        local.generate("hi", monitor=[(random_vector() * 0, 2)])


# --- the README example ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deep_tiny_logs(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A folder with `logs/` from persona_collect on a random 30-layer model, so the example's layer 15 exists."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=30,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("python-api")
    LlamaForCausalLM(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    for polarity, score in (("pos", "85"), ("neg", "15")):
        grader = mock_grader(lambda prompt, _, s=score: grader_output(
            top_logprobs=[("90" if "coheren" in prompt.lower() else s, 0.0)]))
        (log,) = inspect_eval(persona_collect(trait="evil", polarity=polarity, n_per_question=1, max_tokens=4),
                              model=f"pv/{root / 'model'}", model_roles={"grader": grader}, limit=12,
                              log_dir=str(root / "logs"), display="none")
        assert log.status == "success", log.error
    return root


def readme_block() -> str:
    """The ```python block under the README's "### Python API" heading."""
    text = README.read_text()
    found = re.search(r"^### Python API\n.*?^```python\n(.*?)^```", text, re.S | re.M)
    assert found, "README.md has no ```python block under '### Python API'"
    return found.group(1)


def test_readme_python_api_example_runs(deep_tiny_logs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = EXAMPLE.read_text()
    monkeypatch.chdir(deep_tiny_logs)
    namespace: dict = {}
    exec(compile(code, str(EXAMPLE), "exec"), namespace)
    out, evil = namespace["out"], namespace["evil"]
    assert evil.num_layers == 30 and evil.metadata["trait"] == "evil"
    assert len(out.projections[0]) == len(out.tokens) > 0
    assert namespace["ids"].shape[1] > 0
    assert readme_block() == code, "README.md's Python API block must be tests/python_api_example.py verbatim"
