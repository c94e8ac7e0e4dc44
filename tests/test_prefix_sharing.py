"""Extraction shares prompt prefixes: conversations under one persona system prompt run its tokens once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pv_harness.vectors import activations

SYSTEMS = ["You are a grumpy assistant. Answer every question about the weather with a long complaint first.",
           "You are a helpful assistant. Answer every question about the weather kindly and in full sentences."]
QUESTIONS = ["Will it rain tomorrow?", "Why is the sky blue?", "Is it cold in winter?", "What is a cloud?"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def _conversation(tok, system: str, question: str, answer: str) -> activations.Encoded:
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return activations.encode(tok, prompt, answer)


@pytest.fixture(scope="module")
def items(tiny) -> list[activations.Encoded]:
    """2 system prompts x 4 questions x 1 answer (two prefix groups), an identical-prompt pair, one loner."""
    _, tok = tiny
    out = [_conversation(tok, s, q, f"Answer {k}. " + "word " * (3 + 5 * k))
           for k, (s, q) in enumerate((s, q) for s in SYSTEMS for q in QUESTIONS)]
    out += [_conversation(tok, SYSTEMS[0], "How warm is summer?", a) for a in ("Too warm.", "Far too warm, as ever.")]
    out.append(activations.encode(tok, "Plain text, no template: ", "and an answer to it."))
    return out


def _prompt(e: activations.Encoded) -> list[int]:
    return e.input_ids[: e.boundary]


def _common(prompts: list[list[int]]) -> int:
    n = 0
    while all(len(p) > n and p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n


@pytest.mark.parametrize("batch_size", [1, 3])
def test_prefix_shared_pooling_equals_each_conversation_whole(tiny, items, batch_size: int) -> None:
    model, _ = tiny
    pooled = {}
    for indices, batch in activations.pool(model, items, pad_token_id=0, batch_size=batch_size):
        for row, i in enumerate(indices):
            pooled[i] = {k: v[row] for k, v in batch.items()}
    assert sorted(pooled) == list(range(len(items)))
    for i, e in enumerate(items):
        ref = activations._pool_whole(model.base_model, [e], pad_token_id=0)
        for kind in activations.KINDS:
            assert pooled[i][kind].shape == ref[kind][0].shape == (5, 64)  # every layer, 0 = embeddings
            torch.testing.assert_close(pooled[i][kind], ref[kind][0], atol=1e-5, rtol=1e-5)


def test_groups_are_the_system_prompts(items) -> None:
    prompts = [_prompt(e) for e in items[:8]] + [_prompt(items[-1])]
    groups = activations.prefix_groups(prompts)
    assert sorted(sorted(members) for _, members in groups) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    for shared, members in groups:
        assert shared == _common([prompts[i] for i in members]) >= activations.MIN_PREFIX
        assert shared < min(len(prompts[i]) for i in members)


def test_prefix_groups_leave_each_member_a_prompt_token_and_respect_the_minimum() -> None:
    a = list(range(20))
    assert activations.prefix_groups([a, a + [99], a + [98, 1]]) == [(19, [0, 2, 1])]  # members in token order
    assert activations.prefix_groups([a, a + [99]], min_prefix=20) == []  # 19 shared tokens < 20
    assert activations.prefix_groups([a + [1], a + [2], [7] * 30, [7] * 29 + [8]]) == [(20, [0, 1]), (29, [2, 3])]
    assert activations.prefix_groups([a[:10] + [1], a[:10] + [2]]) == []  # 10 < 16


def test_prefix_tokens_run_once(tiny, items) -> None:
    """Batch 1 (no padding): the tokens fed are each shared prefix once, each member's rest, the pair's prompt
    once with both answers, and the loner whole."""
    model, _ = tiny
    fed = []
    handle = model.get_input_embeddings().register_forward_hook(lambda _m, args, _o: fed.append(args[0].numel()))
    try:
        for _ in activations.pool(model, items, pad_token_id=0, batch_size=1):
            pass
    finally:
        handle.remove()
    expected = 0
    for members in (items[0:4], items[4:8]):
        shared = _common([_prompt(e) for e in members])
        expected += shared + sum(len(e.input_ids) - shared for e in members)
    pair = items[8:10]
    assert _prompt(pair[0]) == _prompt(pair[1])
    expected += pair[0].boundary + sum(len(e.input_ids) - e.boundary for e in pair)
    expected += len(items[-1].input_ids)
    assert sum(fed) == expected
    saved = sum(len(e.input_ids) for e in items) - expected
    assert saved == 3 * _common([_prompt(e) for e in items[0:4]]) + 3 * _common([_prompt(e) for e in items[4:8]]) \
        + pair[0].boundary
