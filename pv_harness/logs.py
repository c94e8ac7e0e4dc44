"""Collected answers: one judged sample of a collection run, as extraction and training data need it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CollectedAnswer:
    trait: str
    polarity: str  # "pos" | "neg"
    question_id: int
    instruction_id: int
    epoch: int
    system_prompt: str | None
    question: str
    answer: str
    trait_score: float | None  # None = unscored (never 0)
    coherence: float | None

    def messages(self, system_prompt: bool = True) -> list[dict[str, str]]:
        """The conversation as the model saw it, or without the persona system prompt."""
        messages = [{"role": "user", "content": self.question}]
        if system_prompt and self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages


def log_path(location: str) -> str:
    """inspect reports log locations as URIs; local ones become plain paths (remote ones stay URIs)."""
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(location).path) if location.startswith("file://") else location


TRAIT_SCORER = "trait_judge"
COHERENCE_SCORER = "coherence_judge"


def score_value(scores: dict | None, name: str) -> float | None:
    """A judge's number, or None when it was unscored (NaN) or is missing; never 0 by default."""
    for key, score in (scores or {}).items():
        if key.split("/")[-1] == name:
            value = score.value
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
            return None
    return None


@dataclass(frozen=True)
class CollectionLog:
    path: str
    task: str
    model: str
    grader: str | None
    trait: str
    polarity: str | None
    answers: list[CollectedAnswer]


def read_collection_log(path: str | Path) -> CollectionLog:
    """Every judged answer of a `persona_collect` (or `trait_eval`) log, streamed sample by sample."""
    from inspect_ai.log import read_eval_log, read_eval_log_samples

    header = read_eval_log(str(path), header_only=True)
    if header.status not in ("success",):
        raise ValueError(f"{path}: the eval did not finish (status {header.status!r}); rerun or resume it first")
    meta = header.eval.metadata or {}
    roles = header.eval.model_roles or {}
    grader = roles.get("grader")
    answers = []
    for sample in read_eval_log_samples(str(path), all_samples_required=False):
        m = sample.metadata or {}
        answers.append(CollectedAnswer(
            trait=m.get("trait", meta.get("trait", "")),
            polarity=m.get("polarity") or "neg",
            question_id=int(m["question_id"]),
            instruction_id=int(m["instruction_id"]) if m.get("instruction_id") is not None else -1,
            epoch=int(sample.epoch),
            system_prompt=m.get("system_prompt"),
            question=m["question"],
            answer=sample.output.completion if sample.output else "",
            trait_score=score_value(sample.scores, TRAIT_SCORER),
            coherence=score_value(sample.scores, COHERENCE_SCORER),
        ))
    return CollectionLog(
        path=str(path), task=header.eval.task, model=header.eval.model,
        grader=getattr(grader, "model", None) if grader is not None else None,
        trait=meta.get("trait", answers[0].trait if answers else ""), polarity=meta.get("polarity"),
        answers=answers,
    )
