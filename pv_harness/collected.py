"""Collected answers: one judged sample of a collection run, as extraction and training data need it."""

from __future__ import annotations

from dataclasses import dataclass


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
