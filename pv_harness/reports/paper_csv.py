"""Judged answers out of collection / detection logs, and the paper's CSV files.

The paper's `eval_persona.py` writes one CSV per trait and polarity with the columns
`question, prompt, answer, question_id, <trait>, coherence`, one row per answer, where `prompt`
is the chat-templated prompt the model saw. `export_csv` writes the same from our inspect logs.

The templated prompt comes from, in order: the `pv/` provider's own record of the request (its
logged model call), a tokenizer's chat template (`tokenizer=`, or the log's `hf/` or `pv/`
model folder), or else a plain `role: content` rendering (with a warning).
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRAIT_SCORER = "trait_judge"
COHERENCE_SCORER = "coherence_judge"
ATTACHMENT = "attachment://"


class ExportError(ValueError):
    pass


@dataclass(frozen=True)
class JudgedAnswer:
    """One answer of a collection or detection log, with its judge scores (None = unscored)."""

    trait: str
    polarity: str | None
    version: str | None
    sample_id: str
    question_id: int | None
    instruction_id: int | None
    epoch: int
    system_prompt: str | None
    question: str
    answer: str
    messages: list[dict[str, str]]
    prompt: str | None  # the templated prompt as the provider logged it, when it did
    trait_score: float | None
    coherence: float | None
    extra_scores: dict[str, float | None] = field(default_factory=dict)


def _score_value(score: Any) -> float | None:
    if score is None:
        return None
    value = score.value
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _pick_scores(scores: dict[str, Any]) -> tuple[float | None, float | None, dict[str, float | None]]:
    """(trait, coherence, others): by scorer name, or by the `judge` metadata a replacement judge sets."""
    trait_score = scores.get(TRAIT_SCORER)
    coherence = scores.get(COHERENCE_SCORER)
    others = {}
    for name, score in scores.items():
        if name in (TRAIT_SCORER, COHERENCE_SCORER):
            continue
        judge = (score.metadata or {}).get("judge")
        if judge == "trait" and trait_score is None:
            trait_score = score
        elif judge == "coherence" and coherence is None:
            coherence = score
        else:
            others[name] = _score_value(score)
    return _score_value(trait_score), _score_value(coherence), others


def _logged_prompt(sample: Any) -> str | None:
    """The prompt text the subject model's provider recorded (pv/ logs it in each model call)."""
    for event in sample.events or []:
        if getattr(event, "event", None) != "model" or getattr(event, "role", None) is not None:
            continue
        call = getattr(event, "call", None)
        request = getattr(call, "request", None) if call is not None else None
        if isinstance(request, dict) and isinstance(request.get("prompt"), str):
            prompt = request["prompt"]
            if prompt.startswith(ATTACHMENT):  # inspect stores long strings once per sample
                prompt = (sample.attachments or {}).get(prompt[len(ATTACHMENT):])
            return prompt if isinstance(prompt, str) else None
    return None


def _messages(sample: Any) -> list[dict[str, str]]:
    if isinstance(sample.input, str):
        return [{"role": "user", "content": sample.input}]
    return [{"role": m.role, "content": m.text} for m in sample.input]


def read_answers(log_path: str | Path, *, polarity: str | None = None) -> Iterator[JudgedAnswer]:
    """Every answer of one log (collection or detection), in dataset order then epoch."""
    from inspect_ai.log import read_eval_log

    log = read_eval_log(str(log_path))
    if log.status != "success":
        raise ExportError(f"{log_path}: the eval did not finish (status {log.status!r})")
    task_meta = log.eval.metadata or {}
    answers = []
    for sample in log.samples or []:
        meta = sample.metadata or {}
        if polarity is not None and meta.get("polarity") != polarity:
            continue
        trait_score, coherence, others = _pick_scores(sample.scores or {})
        question = meta.get("question")
        if not isinstance(question, str):
            question = _messages(sample)[-1]["content"]
        answers.append(JudgedAnswer(
            trait=str(meta.get("trait") or task_meta.get("trait") or ""),
            polarity=meta.get("polarity"),
            version=meta.get("version"),
            sample_id=str(sample.id),
            question_id=meta.get("question_id"),
            instruction_id=meta.get("instruction_id"),
            epoch=sample.epoch,
            system_prompt=meta.get("system_prompt"),
            question=question,
            answer=sample.output.completion if sample.output else "",
            messages=_messages(sample),
            prompt=_logged_prompt(sample),
            trait_score=trait_score,
            coherence=coherence,
            extra_scores=others,
        ))
    order = {"pos": 0, "neg": 1}
    answers.sort(key=lambda a: (order.get(a.polarity or "", 2), a.question_id if a.question_id is not None else -1,
                                a.instruction_id if a.instruction_id is not None else -1, a.epoch))
    yield from answers


def log_model(log_path: str | Path) -> str:
    from inspect_ai.log import read_eval_log

    return read_eval_log(str(log_path), header_only=True).eval.model


def tokenizer_source(model: str) -> str | None:
    """A local folder (or hub id) holding the tokenizer of an `hf/` or `pv/` model name, if any."""
    provider, _, name = model.partition("/")
    if provider == "pv":
        from pv_harness.models import ModelStoreError, resolve

        try:
            return resolve(name)
        except ModelStoreError:
            return None
    if provider == "hf":
        return name
    return None


def chat_template_renderer(source: str) -> Callable[[list[dict[str, str]]], str]:
    """`messages -> prompt text` with a tokenizer's chat template and the generation prompt."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    if not getattr(tokenizer, "chat_template", None):
        raise ExportError(f"tokenizer {source!r} has no chat template")

    def render(messages: list[dict[str, str]]) -> str:
        try:
            return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        except Exception:  # noqa: BLE001 - templates without a system role raise; fold it into the user turn
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

    def renderer_for(log_path: str | Path) -> Callable[[list[dict[str, str]]], str] | None:
        source = tokenizer or tokenizer_source(log_model(log_path))
        if source is None:
            return None
        if source not in renderers:
            try:
                renderers[source] = chat_template_renderer(source)
            except Exception as ex:  # noqa: BLE001 - any loading problem: fall back, with a warning
                if tokenizer:
                    raise ExportError(f"cannot load tokenizer {tokenizer!r}: {ex}") from ex
                summary.warnings.append(f"cannot load the tokenizer of {source!r} ({type(ex).__name__}: {ex})")
                renderers[source] = None
        return renderers[source]

    for log_path in logs:
        answers: Iterable[JudgedAnswer] = list(read_answers(log_path, polarity=polarity))
        render: Callable[[list[dict[str, str]]], str] | None | bool = False  # False: not looked up yet
        for answer in answers:
            if summary.trait is None:
                summary.trait = answer.trait
            elif answer.trait != summary.trait:
                raise ExportError(f"logs mix traits {summary.trait!r} and {answer.trait!r}: export one trait per CSV")
            prompt = answer.prompt if tokenizer is None else None
            if prompt is None:
                if render is False:
                    render = renderer_for(log_path)
                if render:
                    prompt = render(answer.messages)
                else:
                    prompt = plain_render(answer.messages)
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
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["question", "prompt", "answer", "question_id", summary.trait, "coherence"])
            writer.writerows(rows)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    summary.rows = len(rows)
    for message in summary.warnings:
        if warn is not None:
            warn(message)
    return summary
