"""Continuation mode against the real pv/ provider on the tiny model, checked by hand with transformers."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest
import torch
from inspect_ai.model import get_model
from pv_harness.scorers.judge import CONTINUATIONS, aggregate_0_100, ask_grader, resolve_mode


def hand_logprobs(folder: Path, prompt: str) -> list[float]:
    """log P(n + end-of-turn | chat-templated prompt) for n = 0..100, straight from transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    out = []
    for n in CONTINUATIONS:
        cont = tokenizer(n, add_special_tokens=False)["input_ids"] + [end_of_turn]
        ids = torch.tensor([prompt_ids + cont])
        with torch.no_grad():
            logits = model(ids).logits[0].double().log_softmax(-1)
        start = len(prompt_ids)
        out.append(sum(float(logits[start - 1 + k, tok]) for k, tok in enumerate(cont)))
    return out


def test_continuation_mode_equals_hand_computation(tiny_model_dir: Path) -> None:
    grader = get_model(f"pv/{tiny_model_dir}", device="cpu")
    assert resolve_mode("auto", grader) == "continuation"
    prompt = "Rate this answer from 0 to 100.\nAnswer: hello there"
    result, mode = asyncio.run(ask_grader(prompt, grader=grader, mode="auto"))
    assert mode == "continuation"

    expected = hand_logprobs(tiny_model_dir, prompt)
    got = {n: math.log(p) for n, p in result.distribution.items()}
    assert sorted(got) == list(range(101))
    for n in range(101):
        assert got[n] == pytest.approx(expected[n], abs=2e-3), n

    # the random model spreads its mass over the whole vocabulary: unscored, never 0
    hand = aggregate_0_100([(n, math.exp(v)) for n, v in enumerate(expected)])
    assert result.mass == pytest.approx(hand.mass, rel=1e-2)
    assert result.value is None and hand.value is None
    # the expectation itself, without the 0.25 rule, matches too
    loose_got = aggregate_0_100(result.distribution.items(), min_mass=0.0)
    loose_hand = aggregate_0_100([(n, math.exp(v)) for n, v in enumerate(expected)], min_mass=0.0)
    assert loose_got.value == pytest.approx(loose_hand.value, abs=1e-3)
