"""The paper's CSV files, from collection / detection logs (read, like every log, by `pv_harness.logs`).

The paper's `eval_persona.py` writes one CSV per trait and polarity with the columns
`question, prompt, answer, question_id, <trait>, coherence`, one row per answer, where `prompt`
is the chat-templated prompt the model saw. `export_csv` writes the same from our inspect logs.

The templated prompt comes from, in order: the `pv/` provider's own record of the request (its
logged model call), a tokenizer's chat template (`tokenizer=`, or the log's `hf/` or `pv/`
model folder), or else a plain `role: content` rendering (with a warning).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pv_harness.atomic import atomic_write
from pv_harness.errors import PvError
from pv_harness.logs import CollectedAnswer, read_collection_log


class ExportError(ValueError, PvError):
    pass


def csv_order(answers: Sequence[CollectedAnswer]) -> list[CollectedAnswer]:
    """The paper's row order: pos before neg, then question, instruction, epoch."""
    order = {"pos": 0, "neg": 1}
    return sorted(answers, key=lambda a: (order.get(a.polarity or "", 2), a.question_id, a.instruction_id, a.epoch))


def chat_template_renderer(source: str) -> Callable[[list[dict[str, str]]], str]:
    """`messages -> prompt text` with a tokenizer's chat template and the generation prompt."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise ExportError(f"tokenizer {source!r} has no chat template")

    def render(messages: list[dict[str, str]]) -> str:
        try:
            return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        except Exception:  # templates without a system role raise: fold it into the user turn
            if messages and messages[0]["role"] == "system" and len(messages) > 1:
                folded = [{"role": messages[1]["role"],
                           "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}, *messages[2:]]
                return str(tokenizer.apply_chat_template(folded, tokenize=False, add_generation_prompt=True))
            raise

    return render


def plain_render(messages: list[dict[str, str]]) -> str:
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


@dataclass
class ExportSummary:
    rows: int = 0
    trait: str | None = None
    unscored_trait: int = 0
    unscored_coherence: int = 0
    plain_prompts: int = 0
    warnings: list[str] = field(default_factory=list)


def _format(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def export_csv(
    logs: Sequence[str | Path],
    out: str | Path,
    *,
    tokenizer: str | None = None,
    polarity: str | None = None,
    warn: Callable[[str], None] | None = None,
) -> ExportSummary:
    """Write the paper's CSV (`question, prompt, answer, question_id, <trait>, coherence`) from logs.

    Unscored answers get an empty cell (pandas reads NaN), never 0. `question_id` is the sample id
    (the paper's `{trait}_{q}_{polarity}_{i}`). All logs must be for one trait.
    """
    summary = ExportSummary()
    renderers: dict[str, Callable[[list[dict[str, str]]], str] | None] = {}
    rows: list[list[str]] = []

    def renderer_for(model: str) -> Callable[[list[dict[str, str]]], str] | None:
        from pv_harness.models import ModelStoreError, NoLocalWeights, local_path

        try:
            source = tokenizer or local_path(model)
        except (ModelStoreError, NoLocalWeights):  # an API model, or an alias not installed: no template here
            return None
        if source not in renderers:
            try:
                renderers[source] = chat_template_renderer(source)
            except Exception as ex:  # any loading problem: fall back, with a warning
                if tokenizer:
                    raise ExportError(f"cannot load tokenizer {tokenizer!r}: {ex}") from ex
                summary.warnings.append(f"cannot load the tokenizer of {source!r} ({type(ex).__name__}: {ex})")
                renderers[source] = None
        return renderers[source]

    for log_path in logs:
        log = read_collection_log(log_path)
        answers = csv_order([a for a in log.answers if polarity is None or a.polarity == polarity])
        render: Callable[[list[dict[str, str]]], str] | None = None
        looked_up = False  # the log's chat template is looked up at its first answer without a logged prompt
        for answer in answers:
            if summary.trait is None:
                summary.trait = answer.trait
            elif answer.trait != summary.trait:
                raise ExportError(f"logs mix traits {summary.trait!r} and {answer.trait!r}: export one trait per CSV")
            prompt = answer.prompt if tokenizer is None else None
            if prompt is None:
                if not looked_up:
                    render, looked_up = renderer_for(log.model), True
                if render:
                    prompt = render(answer.messages())
                else:
                    prompt = plain_render(answer.messages())
                    summary.plain_prompts += 1
            summary.unscored_trait += answer.trait_score is None
            summary.unscored_coherence += answer.coherence is None
            rows.append([answer.question, prompt, answer.answer, answer.sample_id,
                         _format(answer.trait_score), _format(answer.coherence)])
    if summary.trait is None:
        raise ExportError("no samples to export" + (f" with polarity {polarity!r}" if polarity else ""))
    if summary.plain_prompts:
        summary.warnings.append(
            f"{summary.plain_prompts} prompts written as plain 'role: content' text: no chat template was found "
            "for the model in the log; pass --tokenizer PATH to use one"
        )

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["question", "prompt", "answer", "question_id", summary.trait, "coherence"])
            writer.writerows(rows)

    atomic_write(out, write)
    summary.rows = len(rows)
    for message in summary.warnings:
        if warn is not None:
            warn(message)
    return summary
