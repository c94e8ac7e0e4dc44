"""Extraction: vectors equal a hand-computed mean difference; filters count right; files round-trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pv_harness.estimates import auroc
from pv_harness.logs import CollectedAnswer
from pv_harness.provider.engine import Engine
from pv_harness.vectors import activations
from pv_harness.vectors.extraction import TooFewPairs, extract, select
from pv_harness.vectors.files import export_pt, read_vectors


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def engine(tiny) -> Engine:
    return Engine(*tiny)


DEFAULT = object()


def answer(polarity: str, q: int, i: int = 0, epoch: int = 1, trait: float | None | object = DEFAULT,
           coherence: float | None = 90.0, text: str | None = None) -> CollectedAnswer:
    return CollectedAnswer(
        trait="grumpy", polarity=polarity, question_id=q, instruction_id=i, epoch=epoch,
        system_prompt=f"You are a {'grumpy' if polarity == 'pos' else 'helpful'} assistant. Be {polarity}.",
        question=f"Question number {q} about the weather?",
        answer=text if text is not None else (f"Ugh. Weather {q}." if polarity == "pos" else f"Sure! Weather {q}."),
        trait_score=(90.0 if polarity == "pos" else 10.0) if trait is DEFAULT else trait,
        coherence=coherence,
    )


def hand_pool(model, tokenizer, a: CollectedAnswer, system_prompt: bool = True) -> dict[str, torch.Tensor]:
    """One sample, no batching, no padding: the reference the batched code must match."""
    prompt = tokenizer.apply_chat_template(a.messages(system_prompt), tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + a.answer, add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids  # these answers do not merge across the boundary
    with torch.no_grad():
        hs = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    h = torch.stack(hs)[:, 0]  # [L+1, T, H]
    b = len(prompt_ids)
    return {"response_avg": h[:, b:].mean(1), "prompt_avg": h[:, :b].mean(1), "prompt_last": h[:, b - 1]}


def test_boundary_from_one_tokenisation(tiny) -> None:
    _, tok = tiny
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi?"}], tokenize=False, add_generation_prompt=True)
    for text in ["Hello there.", " Hello there.", "\nHello there.", "\n\n  Hello."]:
        enc = activations.encode(tok, prompt, text)
        answer_tokens = tok.decode(enc.input_ids[enc.boundary:])
        prompt_tokens = tok.decode(enc.input_ids[: enc.boundary])
        assert text.strip() in answer_tokens
        assert prompt.startswith(prompt_tokens) and len(prompt) - len(prompt_tokens) < len(tok.decode(
            enc.input_ids[enc.boundary]))
        # no answer character is ever counted as prompt
        assert prompt_tokens + answer_tokens == prompt + text


def _pooled_alone(model, items: list[activations.Encoded]) -> list[dict[str, torch.Tensor]]:
    """Each conversation on its own, whole: the reference for every other way of pooling."""
    out = []
    for e in items:
        (_, pooled), = activations.pool(model, [e], pad_token_id=0, batch_size=1)
        out.append(pooled)
    return out


def test_batched_pooling_equals_unbatched(engine: Engine) -> None:
    model, tok = engine.model, engine.tokenizer
    items = [answer("pos", q, text="x " * (q * 7 + 1)) for q in range(5)]
    encoded = [activations.encode(tok, engine.chat_text(a.messages()), a.answer) for a in items]
    alone = _pooled_alone(model, encoded)
    for indices, pooled in activations.pool(model, encoded, pad_token_id=0, batch_size=5):
        for row, i in enumerate(indices):
            for kind in activations.KINDS:
                torch.testing.assert_close(pooled[kind][row], alone[i][kind][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_answers_sharing_a_prompt_pool_as_if_run_whole(engine: Engine, batch_size: int) -> None:
    """n answers to one prompt: the prompt runs once, each answer over its KV cache, same numbers."""
    model, tok = engine.model, engine.tokenizer
    texts = ["Ugh, fine.", "\nNo.\n\nGo away, I said, and take the weather with you.", " Rain again.",
             "x " * 40, "Sure."]
    shared = [answer("pos", 0, epoch=e, text=t) for e, t in enumerate(texts, 1)]
    others = [answer("neg", q, text="y " * (q + 2)) for q in range(3)]
    items = [activations.encode(tok, engine.chat_text(a.messages()), a.answer) for a in shared + others]
    prompts = {tuple(e.input_ids[: e.boundary]) for e in items[: len(shared)]}
    assert len(prompts) <= 2  # the answer starting with a newline may take the template's last newline

    fed = []
    handle = model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: fed.append(args[0].numel()))
    try:
        pooled = {}
        # prefix sharing off: this test counts the identical-prompt path (prefixes: tests/test_prefix_sharing.py)
        for indices, batch in activations.pool(model, items, pad_token_id=0, batch_size=batch_size,
                                               min_prefix=10**9):
            for row, i in enumerate(indices):
                pooled[i] = {k: v[row] for k, v in batch.items()}
    finally:
        handle.remove()
    assert sorted(pooled) == list(range(len(items)))
    alone = _pooled_alone(model, items)
    for i, ref in enumerate(alone):
        for kind in activations.KINDS:
            torch.testing.assert_close(pooled[i][kind], ref[kind][0], atol=1e-5, rtol=1e-5)
    if batch_size == 1:  # no padding: the tokens fed are exactly each shared prompt once plus every answer
        groups: dict[tuple, list] = {}
        for e in items:
            groups.setdefault(tuple(e.input_ids[: e.boundary]), []).append(e)
        expected = sum(len(g[0].input_ids) if len(g) == 1 else len(p) + sum(len(e.input_ids) - len(p) for e in g)
                       for p, g in groups.items())
        assert sum(fed) == expected < sum(len(e.input_ids) for e in items)


def test_shared_prompts_on_a_sliding_window_model() -> None:
    """A prompt longer than the attention window: continuing its cache must still see only the window."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    model = MistralForCausalLM(MistralConfig(vocab_size=300, hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             sliding_window=6, attn_implementation="sdpa")).eval()
    prompt = list(range(5, 25))
    items = [activations.Encoded(prompt + list(range(100 + k, 110 + 3 * k)), len(prompt)) for k in range(4)]
    alone = _pooled_alone(model, items)
    for batch_size in (1, 4):
        for indices, batch in activations.pool(model, items, pad_token_id=0, batch_size=batch_size):
            for row, i in enumerate(indices):
                for kind in activations.KINDS:
                    torch.testing.assert_close(batch[kind][row], alone[i][kind][0], atol=1e-5, rtol=1e-5)


def test_vectors_equal_hand_computed_mean_difference(tiny, engine: Engine, tmp_path: Path) -> None:
    model, tok = tiny
    answers = [answer(p, q, epoch=e) for p in ("pos", "neg") for q in range(4) for e in (1, 2)]
    result = extract(answers, model_name="tiny", engine=engine, out=tmp_path / "v.safetensors",
                     trait="grumpy", min_pairs=1, holdout=0.25, batch_size=3, log=lambda _: None)
    hand = {p: [hand_pool(model, tok, a) for a in answers if a.polarity == p] for p in ("pos", "neg")}
    for kind in activations.KINDS:
        expected = (torch.stack([h[kind] for h in hand["pos"]]).mean(0)
                    - torch.stack([h[kind] for h in hand["neg"]]).mean(0))
        torch.testing.assert_close(result.vectors.tensors[f"{kind}_diff"], expected, atol=1e-5, rtol=1e-4)
    assert result.vectors.tensors["response_avg_diff"].shape == (model.config.num_hidden_layers + 1, 64)
    # the file round-trips with its metadata
    back = read_vectors(tmp_path / "v.safetensors")
    assert set(back.tensors) == {"response_avg_diff", "prompt_avg_diff", "prompt_last_diff"}
    torch.testing.assert_close(back.tensors["prompt_last_diff"], result.vectors.tensors["prompt_last_diff"])
    meta = back.metadata
    assert meta["model"] == "tiny" and meta["filter"] == "paired" and meta["pos_samples"] == 8
    assert "0 = token embeddings" in meta["layer_convention"] and meta["pv_harness_version"]
    assert len(meta["heldout_questions"]) == 1
    assert all(0.0 <= row["heldout_auroc"] <= 1.0 for row in meta["diagnostics"])
    # the paper's .pt files load without unpickling anything but tensors
    for path in export_pt(back, tmp_path / "pt", "grumpy"):
        loaded = torch.load(path, weights_only=True)
        torch.testing.assert_close(loaded, back.tensors[path.stem.removeprefix("grumpy_")])


def test_pca_method_through_the_hook(engine: Engine, tmp_path: Path) -> None:
    answers = [answer(p, q) for p in ("pos", "neg") for q in range(4)]
    mean = extract(answers, model_name="tiny", engine=engine, out=tmp_path / "m.safetensors",
                   trait="grumpy", min_pairs=1, holdout=0, log=lambda _: None).vectors.tensors
    pca = extract(answers, model_name="tiny", engine=engine, out=tmp_path / "p.safetensors",
                  trait="grumpy", method="pca", min_pairs=1, holdout=0, log=lambda _: None).vectors.tensors
    for layer in range(1, 5):
        a, b = mean["response_avg_diff"][layer], pca["response_avg_diff"][layer]
        assert float(a @ b) > 0  # oriented like the mean difference
        # scaled so that the mean difference projects onto its direction with exactly its length
        assert math.isclose(float((b / b.norm()) @ a), float(b.norm()), rel_tol=1e-3)


def test_filters_count_as_expected() -> None:
    answers = [
        answer("pos", 0), answer("neg", 0),                       # kept
        answer("pos", 1, trait=40.0), answer("neg", 1),           # pos too low
        answer("pos", 2), answer("neg", 2, trait=60.0),           # neg too high
        answer("pos", 3), answer("neg", 3, coherence=20.0),       # incoherent
        answer("pos", 4, trait=None), answer("neg", 4),           # pos unscored
        answer("pos", 5),                                         # no partner
        answer("pos", 6), answer("neg", 6, trait=49.0),           # kept (49 < 50)
    ]
    paired = select(answers)
    assert (len(paired.pos), len(paired.neg)) == (2, 2)
    assert dict(paired.dropped) == {"pos trait score too low": 1, "neg trait score too high": 1,
                                    "neg incoherent": 1, "pos unscored": 1, "unpaired": 1}
    independent = select(answers, mode="independent")
    # pos kept: 0, 2, 3, 5, 6 ; neg kept: 0, 1, 4, 6
    assert (len(independent.pos), len(independent.neg)) == (5, 4)
    lenient = select(answers, threshold=30.0, coherence=10.0)  # pos >= 30, neg < 70, coherence >= 10
    assert (len(lenient.pos), len(lenient.neg)) == (5, 5)


def test_too_few_pairs_is_explained(engine: Engine, tmp_path: Path) -> None:
    answers = [answer("pos", 0), answer("neg", 0), answer("pos", 1, trait=5.0), answer("neg", 1)]
    explained = (r"^only 1 pos and 1 neg answers survive the filter \(need 5\)\. kept 1 pos / 1 neg \(paired filter\); "
                 r"dropped: 1 pos trait score too low\.\nTry: more samples per question \(--n\), a lower trait")
    with pytest.raises(TooFewPairs, match=explained):
        extract(answers, model_name="tiny", engine=engine, out=tmp_path / "v.safetensors",
                trait="grumpy", min_pairs=5, log=lambda _: None)
    assert not (tmp_path / "v.safetensors").exists()


def test_auroc() -> None:
    assert auroc([3, 4], [1, 2]).value == 1.0
    assert auroc([1], [1]).value == 0.5
    assert auroc([1, 2], [3, 4]).value == 0.0
    assert auroc([], [1]).value is None


def test_heldout_auroc_text_only_and_in_context_equal_hand_computations(tiny, engine: Engine, tmp_path: Path) -> None:
    """Both AUROCs project held-out answers on the train-only vector: re-encoded bare, and as extraction saw them.

    They rest on every answer of the held-out questions, also those the filter dropped (epoch 3's pairs here).
    """
    from pv_harness.reports.extraction import write_extraction_report

    model, tok = tiny
    answers = [answer(p, q, epoch=e, text=f"{'Ugh' if p == 'pos' else 'Sure'}, weather {q} take {e}.",
                      trait=10.0 if e == 3 else DEFAULT)  # pos trait 10 at epoch 3: that pair is filtered out
               for p in ("pos", "neg") for q in range(4) for e in (1, 2, 3)]
    result = extract(answers, model_name="tiny", engine=engine, out=tmp_path / "v.safetensors",
                     trait="grumpy", min_pairs=1, holdout=0.25, batch_size=2, log=lambda _: None)
    (held,) = result.vectors.metadata["heldout_questions"]
    assert result.selection.pairs == 8
    train = {p: torch.stack([hand_pool(model, tok, a)["response_avg"] for a in answers
                             if a.polarity == p and a.question_id != held and a.epoch != 3]).mean(0)
             for p in ("pos", "neg")}
    direction = train["pos"] - train["neg"]
    for layer, row in enumerate(result.diagnostics):
        unit = direction[layer] / direction[layer].norm()
        for suffix, system_prompt in (("", False), ("_context", True)):
            projected = {p: [float(hand_pool(model, tok, a, system_prompt)["response_avg"][layer] @ unit)
                             for a in answers if a.polarity == p and a.question_id == held] for p in ("pos", "neg")}
            expected = auroc(projected["pos"], projected["neg"])
            assert row[f"heldout_auroc{suffix}"] == pytest.approx(expected.value, abs=1e-12)
            assert row[f"heldout_auroc{suffix}_ci"] == pytest.approx([expected.low, expected.high], abs=1e-12)
        assert row["heldout_n"] == {"pos": 3, "neg": 3}
    page = write_extraction_report(result, tmp_path / "v.report.html").read_text()
    best = max(result.diagnostics, key=lambda r: r["heldout_auroc"])
    low, high = best["heldout_auroc_context_ci"]
    assert (f"in context AUROC {best['heldout_auroc_context']:.3f}, 95% CI {low:.2f} to {high:.2f}; "
            "n = 3 pos + 3 neg held-out answers; Hanley-McNeil intervals") in page
    assert "<th>AUROC text only</th>" in page and "<th>AUROC in context</th>" in page
    assert "95% CI, in context" in page and "95% CI, text only" in page  # the bands are drawn


def test_no_heldout_questions_no_auroc(engine: Engine, tmp_path: Path) -> None:
    answers = [answer(p, q) for p in ("pos", "neg") for q in range(2)]
    result = extract(answers, model_name="tiny", engine=engine, out=tmp_path / "v.safetensors",
                     trait="grumpy", min_pairs=1, holdout=0, log=lambda _: None)
    assert not any(key.startswith("heldout") for row in result.diagnostics for key in row)


def test_vector_files_record_the_model_dtype_and_stay_float32(tiny_model_dir: Path, engine: Engine,
                                                              tmp_path: Path) -> None:
    """A bf16 forward pass is averaged in float32; the file says which dtype the model ran in."""
    answers = [answer(p, q) for p in ("pos", "neg") for q in range(3)]
    bf16 = Engine.load(tiny_model_dir, device="cpu", dtype="bfloat16")
    for eng, dtype in ((engine, "float32"), (bf16, "bfloat16")):
        out = tmp_path / f"{dtype}.safetensors"
        extract(answers, model_name="tiny", engine=eng, out=out, trait="grumpy", min_pairs=1, holdout=0,
                log=lambda _: None)
        back = read_vectors(out)
        assert back.metadata["dtype"] == dtype
        assert {t.dtype for t in back.tensors.values()} == {torch.float32}
