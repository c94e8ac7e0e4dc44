"""One rule says which graders' scores users are warned about, and one sentence says so everywhere."""

from __future__ import annotations

from inspect_ai.model import get_model
from pv_harness.scorers.judge import is_weak_grader, weak_grader_note


def test_local_graders_and_smollm2_anywhere_are_weak() -> None:
    weak = ["pv/smollm2", "pv/some/local/folder", "hf/Qwen/Qwen2.5-0.5B-Instruct",
            "vllm/HuggingFaceTB/SmolLM2-135M-Instruct"]
    strong = ["openai/gpt-4.1-mini-2025-04-14", "anthropic/claude-sonnet-4-0", "mockllm/model"]
    assert [is_weak_grader(name) for name in weak + strong] == [True] * len(weak) + [False] * len(strong)
    assert not is_weak_grader(get_model("mockllm/model"))


def test_the_one_wording() -> None:
    assert weak_grader_note("pv/smollm2") == (
        "The grader pv/smollm2 is a local model, not a judge to trust (the embedded SmolLM2-135M is far too small "
        "to be one): its scores show that the pipeline runs, not how the model behaves. For real results judge "
        "with an API model, e.g. openai/gpt-4.1-mini-2025-04-14 (the paper's judge).")
    assert weak_grader_note("openai/gpt-4.1-mini-2025-04-14") is None
