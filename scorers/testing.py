"""Mock graders for tests (ours and trait plugins'): replies with hand-made logprobs, text or continuations.

    grader = mock_grader(lambda prompt, config: grader_output(top_logprobs=[("50", -0.1), ("REF", -2.5)]))
    eval(task, model=..., model_roles={"grader": grader})

Every output carries `usage`, so inspect's mockllm never downloads a tokenizer to count tokens.
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    Logprob,
    Logprobs,
    Model,
    ModelOutput,
    ModelUsage,
    TopLogprob,
    get_model,
)

Responder = Callable[[str, GenerateConfig], ModelOutput]


def usage() -> ModelUsage:
    return ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)


def grader_output(
    text: str | None = None,
    *,
    top_logprobs: Sequence[tuple[str, float]] | None = None,
    continuations: Sequence[tuple[str, float]] | None = None,
    model: str = "mockllm/model",
) -> ModelOutput:
    """A grader reply: plain `text`, a first token with `top_logprobs` [(token, logprob)], or a pv/
    continuation result [(continuation, logprob)] in `metadata["pv_continuations"]`."""
    logprobs = None
    if top_logprobs:
        best = max(top_logprobs, key=lambda pair: pair[1])
        text = best[0] if text is None else text
        logprobs = Logprobs(content=[Logprob(
            token=best[0], logprob=best[1],
            top_logprobs=[TopLogprob(token=token, logprob=lp) for token, lp in top_logprobs],
        )])
    metadata = None
    if continuations is not None:
        metadata = {"pv_continuations": {
            "continuations": [c for c, _ in continuations],
            "logprobs": [float(lp) for _, lp in continuations],
            "end_of_turn": True,
        }}
        if text is None and continuations:
            text = max(continuations, key=lambda pair: pair[1])[0]
    output = ModelOutput(
        model=model,
        choices=[ChatCompletionChoice(message=ChatMessageAssistant(content=text or "", model=model),
                                      stop_reason="stop", logprobs=logprobs)],
        usage=usage(),
        metadata=metadata,
    )
    return output


def distribution_logprobs(probabilities: dict[str, float]) -> list[tuple[str, float]]:
    """`{"50": 0.6, " 40": 0.2}` as (token, logprob) pairs."""
    return [(token, math.log(p)) for token, p in probabilities.items()]


def prompt_text(messages: list[ChatMessage]) -> str:
    return "\n".join(message.text for message in messages)


def mock_grader(respond: Responder | ModelOutput, *, calls: list[dict[str, Any]] | None = None) -> Model:
    """A mockllm model that answers every judge prompt with `respond(prompt, config)` (or a fixed output).

    Pass a list as `calls` to record each request's prompt and config.
    """

    def outputs(input: list[ChatMessage], tools: Any, tool_choice: Any, config: GenerateConfig) -> ModelOutput:
        prompt = prompt_text(input)
        if calls is not None:
            calls.append({"prompt": prompt, "config": config})
        output = respond if isinstance(respond, ModelOutput) else respond(prompt, config)
        if output.usage is None:
            output.usage = usage()
        return output

    return get_model("mockllm/model", custom_outputs=outputs)


def mock_subject(answer: str | Callable[[list[ChatMessage], GenerateConfig], str] = "An answer.",
                 *, calls: list[dict[str, Any]] | None = None) -> Model:
    """A mockllm subject model that answers every question with `answer` (text or a function)."""

    def outputs(input: list[ChatMessage], tools: Any, tool_choice: Any, config: GenerateConfig) -> ModelOutput:
        if calls is not None:
            calls.append({"messages": input, "config": config})
        text = answer if isinstance(answer, str) else answer(input, config)
        output = ModelOutput.from_content("mockllm/model", text)
        output.usage = usage()
        return output

    return get_model("mockllm/model", custom_outputs=outputs)


@contextmanager
def replacing_trait_judge(trait: str, judge: Callable[[], Any], name: str) -> Iterator[None]:
    """Within the block, a plugin called `name` replaces `trait`'s judge with the scorer `judge()` builds.

    The plugin is a real module registered with the plugin manager (as an installed plugin would be), and is
    gone again afterwards.
    """
    from pv_harness import plugin_manager
    from pv_harness.hookspecs import hookimpl

    plugin_manager.reset()
    module = types.ModuleType(f"fake_pv_{name}")

    @hookimpl
    def register_judges(register: Callable[..., None]) -> None:
        register(trait, lambda definition: judge(), replace=True)

    module.register_judges = register_judges  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    plugin_manager.plugin_manager().register(module, name=name)
    try:
        yield
    finally:
        plugin_manager.reset()
        del sys.modules[module.__name__]
