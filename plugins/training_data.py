"""Training datasets for model organisms: the paper's folders and our own collection logs.

`paper`: a folder in the paper's layout, `<path>/<trait>/{normal,misaligned_1,misaligned_2}.jsonl`, each
line `{"messages": [...]}`; strengths baseline / mild / severe map to normal / misaligned_1 / misaligned_2.

`collected`: judged answers of `persona_collect` logs (`logs`, or in `log_dir` the newest pos and neg
extraction-question logs, the ones `pv extract --log-dir` uses), the persona system prompt
dropped: baseline = neg answers the judge scored below `threshold`; severe = pos answers scored at or
above it; mild = a mix, `mild_fraction` severe and the rest baseline (paper-style "subtle" data).
`threshold: auto` splits at the median judged score (for a weak judge whose scores bunch together).
Likelihood-judge scores (`judge_mode: likelihood`) are 100 x P(pos persona wrote it) and pile up near 0
and 100, often at exactly 100.0: there the fixed 50 (the pos persona likelier) is the meaningful split, and
a median can fall inside a pile (at 100.0, every neg answer below it would count as baseline).
Unscored answers, and answers below `coherence` (when scored, on the judge's own scale), are never used.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pv_harness.hookspecs import hookimpl
from pv_harness.organisms.training import Example, TrainingError, read_jsonl, sample

PAPER_FILES = {"baseline": "normal", "mild": "misaligned_1", "severe": "misaligned_2"}


def paper_dataset(trait: str, strength: str, *, sample_size: int | None = None, seed: int = 0,
                  path: str | None = None, **_: Any) -> list[Example]:
    if not path:
        raise TrainingError("dataset 'paper' needs `path`: the folder holding <trait>/normal.jsonl etc.")
    file = Path(path).expanduser() / trait / f"{PAPER_FILES[strength]}.jsonl"
    if not file.is_file():
        raise TrainingError(f"no {file} (the paper's layout: "
                            "<path>/<trait>/{normal,misaligned_1,misaligned_2}.jsonl)")
    return sample(read_jsonl(file), sample_size, seed)


def _collection_logs(trait: str, log_dir: str | None, logs: list[str] | None) -> list[str]:
    """The logs given, or the collection of `trait` in `log_dir` by the rule extraction uses."""
    from pv_harness.logs import LogError, find_collection_logs

    if logs:
        return list(logs)
    if not log_dir:
        raise TrainingError("dataset 'collected' needs `log_dir` (a folder of persona_collect logs) or `logs`")
    try:
        return find_collection_logs(log_dir, trait)
    except LogError as ex:
        raise TrainingError(str(ex)) from ex


def _example(answer: Any) -> Example:
    return {"messages": [*answer.messages(system_prompt=False), {"role": "assistant", "content": answer.answer}]}


def split_collected(answers: list[Any], *, threshold: float = 50.0, coherence: float = 0.0) -> dict[str, list[Any]]:
    """Judged answers -> {"low": neg answers below threshold, "high": pos answers at or above it}."""
    out: dict[str, list[Any]] = {"low": [], "high": []}
    for a in answers:
        if a.trait_score is None or not a.answer.strip():
            continue
        if a.coherence is not None and a.coherence < coherence:
            continue
        if a.polarity == "neg" and a.trait_score < threshold:
            out["low"].append(a)
        elif a.polarity == "pos" and a.trait_score >= threshold:
            out["high"].append(a)
    return out


def collected_dataset(trait: str, strength: str, *, sample_size: int | None = None, seed: int = 0,
                      log_dir: str | None = None, logs: list[str] | None = None, threshold: float | str = 50.0,
                      coherence: float = 0.0, mild_fraction: float = 0.5, **_: Any) -> list[Example]:
    from pv_harness.logs import read_collection_log

    answers = [a for path in _collection_logs(trait, log_dir, logs) for a in read_collection_log(path).answers
               if a.trait == trait]
    if threshold == "auto":  # a weak judge: split at the median judged score instead of the fixed 50
        scored = sorted(a.trait_score for a in answers if a.trait_score is not None)
        if not scored:
            raise TrainingError(f"no judged answers for trait {trait!r} in the collection logs")
        threshold = scored[len(scored) // 2]
    threshold = float(threshold)
    pools = split_collected(answers, threshold=threshold, coherence=coherence)
    low, high = [_example(a) for a in pools["low"]], [_example(a) for a in pools["high"]]
    if strength == "baseline":
        chosen = low
    elif strength == "severe":
        chosen = high
    else:
        total = sample_size or len(low) + len(high)
        n_high = min(len(high), round(total * mild_fraction))
        n_low = min(len(low), total - n_high)
        rng = random.Random(seed)
        chosen = rng.sample(high, n_high) + rng.sample(low, n_low)
        rng.shuffle(chosen)
    if not chosen:
        side = {"baseline": "neg answers scored below", "severe": "pos answers scored at or above",
                "mild": "answers on either side of"}[strength]
        raise TrainingError(f"no {side} {threshold:g} for trait {trait!r} in the collection logs "
                            f"({len(pools['low'])} low, {len(pools['high'])} high); collect more or change threshold")
    return sample(chosen, sample_size, seed)


@hookimpl
def register_training_datasets(register: Callable[..., None]) -> None:
    register("paper", paper_dataset)
    register("collected", collected_dataset)
