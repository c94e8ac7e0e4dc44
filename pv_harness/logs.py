"""The one reader of our eval logs: which logs a step uses, every judged answer in them, and its scores.

Extraction, collected training data, the CSV export, the sweep and monitor reports, `pv run` and the
experiment results all read logs here, so they agree on which logs count and on which score is the
trait judge's, whichever scorer produced it (a plugin may replace the trait judge).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pv_harness.errors import PvError

if TYPE_CHECKING:
    from inspect_ai.log import EvalLog, EvalSample

TRAIT_SCORER = "trait_judge"
COHERENCE_SCORER = "coherence_judge"
COLLECTION_TASK = "persona_collect"  # the `pv_task` whose logs extraction reads
ATTACHMENT = "attachment://"


class LogError(ValueError, PvError):
    """A log a step cannot use: unreadable, unfinished, of another task, or none of the kind it needs."""


@dataclass(frozen=True)
class CollectedAnswer:
    trait: str
    polarity: str | None  # "pos" | "neg"; None in a detection log
    question_id: int
    instruction_id: int  # -1 when the task has no instructions (detection)
    epoch: int
    system_prompt: str | None
    question: str
    answer: str
    trait_score: float | None  # None = unscored (never 0)
    coherence: float | None
    sample_id: str = ""
    prompt: str | None = None  # the templated prompt the provider logged, when it did (pv/ does)

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


# --- which score is which ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeNames:
    """The names a log's samples file the trait judge's and the coherence judge's scores under (None: absent)."""

    trait: str | None
    coherence: str | None


def judge_names(header: EvalLog) -> JudgeNames:
    """Read from the log which scorer is the trait judge.

    Our tasks score with `scorers.judge.judge_scorers`, which puts the trait judge first: `trait_judge`, or the
    scorer a plugin registered with `register_judges(replace=True)` instead; the coherence judge is never replaced.
    """
    names = [scorer.name for scorer in (header.eval.scorers or [])]
    if not names:  # a log that records no scorers: look for our judges by their own names
        return JudgeNames(TRAIT_SCORER, COHERENCE_SCORER)
    trait = TRAIT_SCORER if TRAIT_SCORER in names else names[0]
    return JudgeNames(trait=trait, coherence=COHERENCE_SCORER if COHERENCE_SCORER in names else None)


def score_value(scores: dict[str, Any] | None, name: str | None) -> float | None:
    """The number the scorer `name` gave, or None when it was unscored (NaN), missing or not a number; never 0."""
    if name is None:
        return None
    for key, score in (scores or {}).items():
        if key.split("/")[-1] == name.split("/")[-1]:
            value = score.value
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                return float(value)
            return None
    return None


@dataclass(frozen=True)
class ScoreSummary:
    """Mean and standard error over the scored answers (the formula of the tasks' `judge_stats` metric)."""

    mean: float | None
    stderr: float | None
    scored: int
    unscored: int


def summarise(values: Iterable[float | None]) -> ScoreSummary:
    from pv_harness.scorers.metrics import mean_stderr

    values = list(values)
    scored = [v for v in values if v is not None]
    if not scored:
        return ScoreSummary(None, None, 0, len(values))
    mean, stderr = mean_stderr(scored)
    return ScoreSummary(mean, stderr, len(scored), len(values) - len(scored))


# --- reading samples -----------------------------------------------------------------------------------------


def unreadable_log(path: str | Path, error: Exception) -> LogError:
    """The one message for a log file inspect cannot parse (cut short by a crash or a full disk, or not a log)."""
    detail = " ".join(str(error).split())
    return LogError(f"{path}: cannot read this log ({type(error).__name__}: {detail}): it is truncated or corrupt, "
                    "or not an inspect eval log; delete it and rerun the step that wrote it")


def read_header(path: str | Path) -> EvalLog:
    """A log's header (no samples); a file that is not a readable log is a LogError naming it."""
    from inspect_ai.log import read_eval_log

    try:
        return read_eval_log(str(path), header_only=True)
    except OSError:
        raise  # a missing or unreadable file says so itself
    except Exception as ex:  # inspect's zip, zstd, JSON and schema errors alike: all mean "not a log we can read"
        raise unreadable_log(path, ex) from ex


@dataclass(frozen=True)
class JudgedSample:
    """One sample of a log (an answer) with its trait and coherence scores (None = unscored)."""

    sample: EvalSample
    trait_score: float | None
    coherence: float | None


def judged_samples(path: str | Path, header: EvalLog | None = None) -> Iterator[JudgedSample]:
    """Every sample of a log, streamed, with its judge scores: the one place scores are read from samples."""
    names = judge_names(header or read_header(path))
    for sample in _samples(path):
        yield JudgedSample(sample, score_value(sample.scores, names.trait), score_value(sample.scores, names.coherence))


def _samples(path: str | Path) -> Iterator[EvalSample]:
    """inspect's sample stream, with a log that breaks off part way (a readable header, a corrupt sample) named."""
    from inspect_ai.log import read_eval_log_samples

    samples = read_eval_log_samples(str(path), all_samples_required=False)
    while True:
        try:
            sample = next(samples)
        except StopIteration:
            return
        except OSError:
            raise
        except Exception as ex:  # as in read_header
            raise unreadable_log(path, ex) from ex
        yield sample


def _logged_prompt(sample: EvalSample) -> str | None:
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


def sample_question(sample: EvalSample) -> str:
    question = (sample.metadata or {}).get("question")
    if isinstance(question, str):
        return question
    return sample.input if isinstance(sample.input, str) else sample.input[-1].text


@dataclass(frozen=True)
class CollectionLog:
    path: str
    task: str
    model: str
    grader: str | None
    trait: str
    polarity: str | None
    answers: list[CollectedAnswer]

    def summary(self, score: str = "trait") -> ScoreSummary:
        """`trait` or `coherence` scores of every answer, summarised."""
        return summarise(a.trait_score if score == "trait" else a.coherence for a in self.answers)


def read_collection_log(path: str | Path, task: str | None = None) -> CollectionLog:
    """Every judged answer of a finished `persona_collect` or `trait_eval` log, streamed sample by sample.

    `task`: the `pv_task` the log must come from (extraction needs `persona_collect`): any other log's samples
    would read as answers without a polarity, and fail later with a message that hides the mix-up.
    """
    header = read_header(path)
    if header.status != "success":
        raise LogError(f"{path}: the eval did not finish (status {header.status!r}); rerun or resume it first")
    meta = header.eval.metadata or {}
    if task is not None and meta.get("pv_task") != task:
        raise LogError(f"{path} is a {header.eval.task} log, not a collection log; pass the logs of "
                       f"pv_harness/{task}")
    grader = (header.eval.model_roles or {}).get("grader")
    answers = []
    for judged in judged_samples(path, header):
        sample = judged.sample
        m = sample.metadata or {}
        answers.append(CollectedAnswer(
            trait=str(m.get("trait") or meta.get("trait") or ""),
            polarity=m.get("polarity"),
            question_id=int(m["question_id"]) if m.get("question_id") is not None else -1,
            instruction_id=int(m["instruction_id"]) if m.get("instruction_id") is not None else -1,
            epoch=int(sample.epoch),
            system_prompt=m.get("system_prompt"),
            question=sample_question(sample),
            answer=sample.output.completion if sample.output else "",
            trait_score=judged.trait_score,
            coherence=judged.coherence,
            sample_id=str(sample.id),
            prompt=_logged_prompt(sample),
        ))
    return CollectionLog(
        path=str(path), task=header.eval.task, model=header.eval.model,
        grader=getattr(grader, "model", None) if grader is not None else None,
        trait=meta.get("trait", answers[0].trait if answers else ""), polarity=meta.get("polarity"),
        answers=answers,
    )


# --- which logs --------------------------------------------------------------------------------------------------


def finished_logs(log_dir: str | Path, *, task: str | None = None, trait: str | None = None,
                  model: str | None = None) -> list[EvalLog]:
    """Headers of the successful logs in `log_dir`, newest first; only one `pv_task`, trait or model when given."""
    from inspect_ai.log import list_eval_logs

    from pv_harness.models import same_model

    found = []
    for info in list_eval_logs(str(log_dir), descending=True):
        header = read_header(info.name)
        meta = header.eval.metadata or {}
        if (header.status == "success" and (task is None or meta.get("pv_task") == task)
                and (trait is None or meta.get("trait") == trait)
                and (model is None or same_model(header.eval.model, model))):
            found.append(header)
    return found


def find_collection_logs(log_dir: str | Path, trait: str, model: str | None = None) -> list[str]:
    """The newest finished `persona_collect` logs of the extraction questions covering pos and neg for a trait.

    The one rule for "the collection" of a trait in a folder: extraction and collected training data use it.
    """
    newest: dict[str, str] = {}
    for header in finished_logs(log_dir, task=COLLECTION_TASK, trait=trait, model=model):
        meta = header.eval.metadata or {}
        if meta.get("version", "extract") != "extract":
            continue
        polarity = str(meta.get("polarity"))
        for side in ("pos", "neg") if polarity == "both" else (polarity,):
            newest.setdefault(side, log_path(header.location))
    missing = [p for p in ("pos", "neg") if p not in newest]
    if missing:
        raise LogError(f"no finished persona_collect log for trait {trait!r} with polarity {' and '.join(missing)} "
                       f"in {log_dir}" + (f" for model {model}" if model else "")
                       + "; collect them first (pv_harness/persona_collect with -T polarity=both)")
    return sorted(set(newest.values()))
