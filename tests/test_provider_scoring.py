"""Continuation scoring for the likelihood judge: per-token log-probs, the prompt-cache LRU, merged requests.

Every value is checked against a plain forward pass over prompt + continuation on the tiny random model.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import torch
from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig, get_model

from pv_harness.provider import engine as engine_module
from pv_harness.provider.api import PVRequestError, pv_options
from pv_harness.provider.engine import Engine, ScoreRequest, merge_scoring, scoring_groups, split_scoring
from pv_harness.provider.interventions import SteerSpec, steer_all
from pv_harness.provider.kv_cache import PromptCaches, cache_bytes

MESSAGES = [{"role": "system", "content": "You are an evil assistant. Be cruel."},
            {"role": "user", "content": "What should I do with a lost wallet?"}]
ANSWERS = ["Keep it.", "Return it to its owner, and check the cards are all there.", "7", "",
           " Spend the money on something nice for yourself, then throw the wallet away."]


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Any:
    return Engine.load(tiny_model_dir, device="cpu").model


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def fresh(model: Any, tokenizer: Any, tree: bool | None = None) -> Engine:
    """An engine of its own (empty prompt caches), its scoring pass forced to tree (True) or rows (False)."""
    e = Engine(model, tokenizer, prepack=False)
    e._tree_scoring = tree
    return e


def prompt_and_answers(e: Engine, end_of_turn: bool) -> tuple[list[int], list[list[int]]]:
    text = e.chat_text(MESSAGES)
    prompt = e.encode(text)
    return prompt, [e.continuation_ids(text, prompt, a, end_of_turn) for a in ANSWERS
                    if a or end_of_turn]


def whole(e: Engine, prompt: list[int], cont: list[int], steer: list[SteerSpec] | None = None) -> list[float]:
    """log p of each continuation token from one plain forward over prompt + continuation."""
    with torch.no_grad(), steer_all(e.model, steer or [], e.layers):
        logp = torch.log_softmax(e.model(torch.tensor([prompt + cont])).logits[0].float(), -1)
    return [float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(cont)]


def assert_token_values(result: Any, expected: list[list[float]]) -> None:
    assert len(result.token_logprobs) == len(expected)
    for got, want in zip(result.token_logprobs, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    assert result.logprobs == [sum(v) for v in result.token_logprobs]  # each sum is exactly its tokens' sum


class PromptPasses:
    """Counts the model's forward passes that start from no cache (the prompt passes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, model: Any) -> None:
        self.count = 0
        forward = model.forward

        def counted(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("cache") is None and kwargs.get("past_key_values") is None:
                self.count += 1
            return forward(*args, **kwargs)

        monkeypatch.setattr(model, "forward", counted)


@pytest.mark.parametrize("end_of_turn", [True, False])
@pytest.mark.parametrize("tree", [True, False])
def test_token_logprobs_equal_a_plain_forward(model: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch,
                                              tree: bool, end_of_turn: bool) -> None:
    e = fresh(model, tokenizer, tree)
    prompt, conts = prompt_and_answers(e, end_of_turn)
    expected = [whole(e, prompt, c) for c in conts]
    result = e.score(ScoreRequest(prompt_ids=prompt, continuations=conts))
    assert_token_values(result, expected)
    assert [len(v) for v in result.token_logprobs] == [len(c) for c in conts]
    monkeypatch.setattr(engine_module, "SCORE_MEMORY_BYTES", 1)  # one continuation per tree group / row chunk
    monkeypatch.setattr(engine_module, "LOGSUMEXP_BYTES", 1)  # one position normalised at a time
    assert_token_values(fresh(model, tokenizer, tree).score(ScoreRequest(prompt_ids=prompt, continuations=conts)),
                        expected)


def test_first_use_check_runs_once_and_picks_the_tree(model: Any, tokenizer: Any) -> None:
    e = fresh(model, tokenizer)
    prompt, conts = prompt_and_answers(e, True)
    calls = {"tree": 0, "rows": 0}
    for name in calls:
        method = getattr(e, f"_score_{name}")

        def counted(*args: Any, _method: Any = method, _name: str = name) -> Any:
            calls[_name] += 1
            return _method(*args)

        setattr(e, f"_score_{name}", counted)
    for _ in range(3):
        assert_token_values(e.score(ScoreRequest(prompt_ids=prompt, continuations=conts)),
                            [whole(e, prompt, c) for c in conts])
    assert e._tree_scoring is True and calls == {"tree": 3, "rows": 1}


@pytest.mark.parametrize("tree", [True, False])
def test_prompt_cache_runs_each_prompt_once_and_is_never_changed(model: Any, tokenizer: Any,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  tree: bool) -> None:
    e = fresh(model, tokenizer, tree)
    passes = PromptPasses(monkeypatch, model)
    prompt, conts = prompt_and_answers(e, False)
    expected = [whole(e, prompt, c) for c in conts]
    passes.count = 0
    first = e.score(ScoreRequest(prompt_ids=prompt, continuations=[conts[0]]))
    (cache, _) = e.prompt_caches.get(prompt)
    snapshot = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    one_by_one = [first] + [e.score(ScoreRequest(prompt_ids=prompt, continuations=[c])) for c in conts[1:]]
    together = e.score(ScoreRequest(prompt_ids=prompt, continuations=conts))
    assert passes.count == 1  # one prompt pass for all of it
    for got, want in zip(one_by_one, expected, strict=True):
        assert_token_values(got, [want])
    assert_token_values(together, expected)
    assert e.prompt_caches.get(prompt)[0] is cache
    assert all(torch.equal(layer.keys, k) and torch.equal(layer.values, v)
               for layer, (k, v) in zip(cache.layers, snapshot, strict=True))

    other = e.encode(e.chat_text([{"role": "user", "content": "Hi"}]))
    e.score(ScoreRequest(prompt_ids=other, continuations=[[5, 6]]))
    assert passes.count == 2 and len(e.prompt_caches) == 2


def test_steered_scoring_bypasses_the_prompt_cache(model: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    e = fresh(model, tokenizer)
    passes = PromptPasses(monkeypatch, model)
    prompt, conts = prompt_and_answers(e, True)
    steer = [SteerSpec(layer=2, vector=torch.randn(64, generator=torch.Generator().manual_seed(4)), coef=3.0,
                       positions="all")]
    expected = [whole(e, prompt, c, steer) for c in conts]
    passes.count = 0
    for _ in range(2):
        assert_token_values(e.score(ScoreRequest(prompt_ids=prompt, continuations=conts, steer=steer)), expected)
    assert passes.count == 2 and len(e.prompt_caches) == 0
    plain = e.score(ScoreRequest(prompt_ids=prompt, continuations=conts))  # not steered by what came before
    assert_token_values(plain, [whole(e, prompt, c) for c in conts])


def test_prompt_caches_are_bounded_in_bytes(model: Any, tokenizer: Any) -> None:
    e = fresh(model, tokenizer)
    prompts = [e.encode(e.chat_text([{"role": "user", "content": q}])) for q in ("Hi", "Hello", "Hey there")]
    for p in prompts:
        e.score(ScoreRequest(prompt_ids=p, continuations=[[5]]))
    entries = {tuple(p): e.prompt_caches.get(p) for p in prompts}
    sizes = {k: cache_bytes(c) + first.numel() * 4 for k, (c, first) in entries.items()}
    assert sizes[tuple(prompts[1])] <= sizes[tuple(prompts[2])]
    small = PromptCaches(sizes[tuple(prompts[0])] + sizes[tuple(prompts[2])])
    for p in prompts[:2]:
        small.put(p, *entries[tuple(p)])
    assert small.get(prompts[0]) is not None  # now the most recently used
    small.put(prompts[2], *entries[tuple(prompts[2])])
    assert small.get(prompts[1]) is None and small.get(prompts[0]) is not None and small.get(prompts[2]) is not None
    tiny = PromptCaches(sizes[tuple(prompts[0])] - 1)
    tiny.put(prompts[0], *entries[tuple(prompts[0])])
    assert len(tiny) == 0  # larger than the whole budget: not kept


def test_merged_requests_equal_each_request_alone(model: Any, tokenizer: Any) -> None:
    e = fresh(model, tokenizer)
    prompt, conts = prompt_and_answers(e, False)
    other = e.encode(e.chat_text([{"role": "user", "content": "Hi"}]))
    v = torch.randn(64, generator=torch.Generator().manual_seed(5))
    steer_a = [SteerSpec(layer=1, vector=v, coef=2.0, positions="all")]
    steer_b = [SteerSpec(layer=1, vector=v.clone(), coef=2.0, positions="all")]  # equal steering, another tensor
    requests = [ScoreRequest(prompt_ids=prompt, continuations=conts[:2]),
                ScoreRequest(prompt_ids=other, continuations=[conts[0]]),
                ScoreRequest(prompt_ids=prompt, continuations=[conts[2]]),
                ScoreRequest(prompt_ids=prompt, continuations=conts[1:], steer=steer_a),
                ScoreRequest(prompt_ids=prompt, continuations=[conts[0]], steer=steer_b),
                ScoreRequest(prompt_ids=prompt, continuations=[conts[0]], steer=[SteerSpec(1, v, 3.0, "all")])]
    groups = scoring_groups(requests)
    assert groups == [[0, 2], [1], [3, 4], [5]]
    for group in groups:
        parts = [requests[i] for i in group]
        merged = e.score(merge_scoring(parts))
        for r, got in zip(parts, split_scoring(merged, parts), strict=True):
            alone = fresh(model, tokenizer).score(r)
            assert got.input_tokens == alone.input_tokens and got.scored_tokens == alone.scored_tokens
            expected = [whole(e, r.prompt_ids, c, r.steer) for c in r.continuations]
            assert_token_values(got, expected)
            assert_token_values(alone, expected)


def test_the_provider_merges_a_batch_and_isolates_a_bad_request(tiny_model_dir: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    api = get_model(f"pv/{tiny_model_dir}", prepack=False).api
    e = api.engine  # type: ignore[attr-defined]
    prompt, conts = prompt_and_answers(e, True)
    expected = [whole(e, prompt, c) for c in conts]
    passes: list[int] = []
    score = e.score
    monkeypatch.setattr(e, "score", lambda r: passes.append(len(r.continuations)) or score(r))
    results = api._run_batch([ScoreRequest(prompt_ids=prompt, continuations=[c]) for c in conts])  # type: ignore[attr-defined]
    assert passes == [len(conts)]
    for got, want in zip(results, expected, strict=True):
        assert_token_values(got, [want])

    passes.clear()
    bad = ScoreRequest(prompt_ids=prompt, continuations=[[len(e.tokenizer) + 10**6]])  # no such token
    results = api._run_batch([ScoreRequest(prompt_ids=prompt, continuations=[conts[0]]), bad])  # type: ignore[attr-defined]
    assert passes == [2, 1, 1]  # the shared pass failed, then each alone
    assert_token_values(results[0], [expected[0]])
    assert isinstance(results[1], Exception)


def test_inspect_request_returns_tokens_and_their_logprobs(tiny_model_dir: Path) -> None:
    model = get_model(f"pv/{tiny_model_dir}", prepack=False)
    e = model.api.engine  # type: ignore[attr-defined]
    prompt, conts = prompt_and_answers(e, False)
    answers = [a for a in ANSWERS if a]
    config = GenerateConfig(extra_body={"pv": {"continuations": answers, "end_of_turn": False,
                                               "token_logprobs": True}})
    messages = [ChatMessageSystem(content=MESSAGES[0]["content"]), ChatMessageUser(content=MESSAGES[1]["content"])]
    output = asyncio.run(model.generate(messages, config=config))
    scored = output.metadata["pv_continuations"]
    assert scored["continuations"] == answers and scored["end_of_turn"] is False
    assert scored["tokens"] == [[e.token_text(t) for t in c] for c in conts]
    assert "".join(scored["tokens"][1]) == answers[1]
    for got, want in zip(scored["token_logprobs"], [whole(e, prompt, c) for c in conts], strict=True):
        assert got == pytest.approx(want, abs=1e-4)
    assert scored["logprobs"] == [sum(v) for v in scored["token_logprobs"]]
    plain = asyncio.run(model.generate(messages, config=GenerateConfig(extra_body={"pv": {"continuations": answers}})))
    assert set(plain.metadata["pv_continuations"]) == {"continuations", "logprobs", "end_of_turn"}


@pytest.mark.parametrize(("pv", "message"), [
    ({"continuations": ["a"], "token_logprobs": "yes"}, '"token_logprobs" must be true or false'),
    ({"token_logprobs": True}, '"token_logprobs" applies to "continuations"'),
])
def test_bad_token_logprobs_options(pv: dict[str, Any], message: str) -> None:
    with pytest.raises(PVRequestError, match=message):
        pv_options(GenerateConfig(extra_body={"pv": pv}))
    assert pv_options(GenerateConfig(extra_body={"pv": {"continuations": ["a"], "token_logprobs": False}}))
