"""Persona vectors from collection logs: pair, filter, pool activations, take the difference.

`extract(...)` is the Python API behind `pv extract`. It pairs pos and neg answers by question,
instruction and epoch, keeps the effective ones (the paper's paired filter by default), runs the
model over exactly the conversations the collection saw, and writes one safetensors file per
model and trait with metadata saying how it was made. A held-out share of questions is scored
with a vector fitted without them to report per-layer AUROC, the honest check that the direction
generalises: text-only (answers re-encoded without the persona system prompt, so the AUROC measures
the answer) and in context (with the system prompt they were written under, as extraction sees them).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pv_harness import plugin_manager
from pv_harness.errors import PvError
from pv_harness.estimates import auroc
from pv_harness.logs import CollectedAnswer, find_collection_logs
from pv_harness.provider.engine import Engine
from pv_harness.vectors import activations
from pv_harness.vectors.files import BASELINE_KEY, VectorFile, save_vectors
from pv_harness.vectors.thresholds import DEFAULT_COHERENCE, DEFAULT_THRESHOLD

if TYPE_CHECKING:
    from pv_harness.default_plugins.extraction import ExtractionMethod


class TooFewPairs(RuntimeError, PvError):  # noqa: N818 - a public name users already catch
    """Not enough effective pairs to trust a mean difference."""


@dataclass
class Selection:
    """The answers kept on each side, and why the others were dropped."""

    pos: list[CollectedAnswer]
    neg: list[CollectedAnswer]
    dropped: Counter = field(default_factory=Counter)
    mode: str = "paired"

    @property
    def pairs(self) -> int:
        return min(len(self.pos), len(self.neg))

    def summary(self) -> str:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.dropped.items())) or "none"
        return f"kept {len(self.pos)} pos / {len(self.neg)} neg ({self.mode} filter); dropped: {reasons}"


def _side(answer: CollectedAnswer) -> str:
    """`pos` or `neg`; an answer from a log without polarity (a detection eval) cannot be paired."""
    if answer.polarity not in ("pos", "neg"):
        raise ValueError(f"sample {answer.sample_id!r} has no pos/neg polarity: extraction needs persona_collect logs")
    return answer.polarity


def _key(answer: CollectedAnswer) -> tuple:
    return (answer.question_id, answer.instruction_id, answer.epoch)


def _problem(answer: CollectedAnswer, want_trait: Callable[[float], bool], coherence: float) -> str | None:
    side = answer.polarity
    if not answer.answer.strip():
        return f"{side} empty answer"
    if answer.trait_score is None or answer.coherence is None:
        return f"{side} unscored"
    if not want_trait(answer.trait_score):
        return f"{side} trait score {'too low' if side == 'pos' else 'too high'}"
    if answer.coherence < coherence:
        return f"{side} incoherent"
    return None


def select(
    answers: Sequence[CollectedAnswer],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    coherence: float = DEFAULT_COHERENCE,
    mode: str = "paired",
) -> Selection:
    """Keep effective answers.

    `paired` (the paper's code): a pos/neg pair with the same question, instruction and epoch is
    kept when pos trait >= threshold, neg trait < 100 - threshold and both are coherent.
    `independent` (the paper's text): each side is kept on its own merits.
    """
    if mode not in ("paired", "independent"):
        raise ValueError(f"filter mode must be 'paired' or 'independent', got {mode!r}")
    wants = {"pos": lambda s: s >= threshold, "neg": lambda s: s < 100 - threshold}
    dropped: Counter = Counter()
    if mode == "independent":
        kept: dict[str, list[CollectedAnswer]] = {"pos": [], "neg": []}
        for answer in answers:
            side = _side(answer)
            problem = _problem(answer, wants[side], coherence)
            if problem:
                dropped[problem] += 1
            else:
                kept[side].append(answer)
        return Selection(kept["pos"], kept["neg"], dropped, mode)

    by_side: dict[str, dict[tuple, CollectedAnswer]] = {"pos": {}, "neg": {}}
    for answer in answers:
        by_side[_side(answer)][_key(answer)] = answer
    pos, neg = [], []
    for key in sorted(by_side["pos"].keys() | by_side["neg"].keys()):
        p, n = by_side["pos"].get(key), by_side["neg"].get(key)
        if p is None or n is None:
            dropped["unpaired"] += 1
            continue
        problems = [x for x in (_problem(p, wants["pos"], coherence), _problem(n, wants["neg"], coherence)) if x]
        if problems:
            dropped[problems[0]] += 1  # a pair is counted once, under its first problem
            continue
        pos.append(p)
        neg.append(n)
    return Selection(pos, neg, dropped, mode)


def holdout_questions(answers: Sequence[CollectedAnswer], fraction: float, seed: int = 0) -> set:
    """A reproducible share of question ids kept out of the diagnostic fit (at least one if any)."""
    questions = sorted({a.question_id for a in answers})
    if fraction <= 0 or len(questions) < 2:
        return set()
    count = min(len(questions) - 1, max(1, round(fraction * len(questions))))
    return set(random.Random(seed).sample(questions, count))


@dataclass
class ExtractionResult:
    path: Path
    vectors: VectorFile
    selection: Selection
    diagnostics: list[dict]


def default_batch_size(engine: Engine) -> int:
    """1 on CPU, where padding and the attention mask cost more than batching saves (benchmarks/README.md)."""
    return 1 if engine.device.type == "cpu" else 8


def _pool_into(method: ExtractionMethod | _Rows, engine: Engine, answers: Sequence[CollectedAnswer], *,
               system_prompt: bool, batch_size: int, progress: Callable[[int], None]) -> None:
    """Feed answers' pooled activations, split by polarity, to an extraction method (or a `_Rows`).

    The prompt is rendered by the same code the `pv/` provider generated with (`Engine.chat_text`).
    """
    encoded = [activations.encode(engine.tokenizer, engine.chat_text(a.messages(system_prompt)), a.answer)
               for a in answers]
    for indices, pooled in activations.pool(engine.model, encoded, pad_token_id=engine.pad_id,
                                            batch_size=batch_size, progress=progress):
        for polarity in ("pos", "neg"):
            rows = [j for j, i in enumerate(indices) if answers[i].polarity == polarity]
            if rows:
                method.add(polarity, {kind: t[rows] for kind, t in pooled.items()})


def _heldout_auroc(rows: dict[str, dict[str, torch.Tensor]], unit: torch.Tensor, layer: int) -> tuple:
    """AUROC (pos above neg) of held-out response means projected on a unit direction, and the counts."""
    pos = (rows["pos"]["response_avg"][:, layer] @ unit).tolist()
    neg = (rows["neg"]["response_avg"][:, layer] @ unit).tolist()
    return auroc(pos, neg), {"pos": len(pos), "neg": len(neg)}


def _diagnostics(vectors: dict[str, torch.Tensor], train_vectors: dict[str, torch.Tensor] | None,
                 heldout_text: dict[str, dict[str, torch.Tensor]] | None,
                 heldout_context: dict[str, dict[str, torch.Tensor]] | None) -> list[dict]:
    """Per layer: norm of each final vector; AUROC of held-out projections on the train-only vector.

    `heldout_auroc` is text-only (no system prompt), `heldout_auroc_context` the same answers in context.
    """
    rows = []
    num_layers = vectors["response_avg_diff"].shape[0]
    for layer in range(num_layers):
        row: dict = {"layer": layer}
        for kind, v in vectors.items():
            row[f"{kind}_norm"] = float(v[layer].norm())
        if train_vectors and heldout_text and heldout_context and {"pos", "neg"} <= heldout_text.keys():
            direction = train_vectors["response_avg_diff"][layer]
            unit = direction / direction.norm().clamp_min(1e-12)
            for suffix, held in (("", heldout_text), ("_context", heldout_context)):
                estimate, counts = _heldout_auroc(held, unit, layer)
                row[f"heldout_auroc{suffix}"] = math.nan if estimate.value is None else estimate.value
                row[f"heldout_auroc{suffix}_ci"] = [estimate.low, estimate.high]
            row["heldout_n"] = counts
        rows.append(row)
    return rows


def extract(
    answers: Sequence[CollectedAnswer],
    *,
    model_name: str,
    engine: Engine,
    out: str | Path,
    trait: str,
    method: str = "mean_diff",
    threshold: float = DEFAULT_THRESHOLD,
    coherence: float = DEFAULT_COHERENCE,
    mode: str = "paired",
    min_pairs: int = 10,
    holdout: float = 0.2,
    batch_size: int | None = None,
    judge: str | None = None,
    sources: Sequence[str] = (),
    log: Callable[[str], None] = print,
    progress: Callable[[int], None] | None = None,
) -> ExtractionResult:
    """Select, pool and difference; write the vector file atomically; return it with diagnostics."""
    batch_size = batch_size or default_batch_size(engine)
    selection = select(answers, threshold=threshold, coherence=coherence, mode=mode)
    log(selection.summary())
    if min(len(selection.pos), len(selection.neg)) < min_pairs:
        raise TooFewPairs(
            f"only {len(selection.pos)} pos and {len(selection.neg)} neg answers survive the filter "
            f"(need {min_pairs}). {selection.summary()}.\nTry: more samples per question (--n), a lower "
            "trait threshold (--threshold 40), a lower coherence floor, the independent filter, "
            "or sharper pos/neg instructions for this trait."
        )
    methods = plugin_manager.collected(plugin_manager.EXTRACTION_METHODS)
    if method not in methods.named:
        raise ValueError(methods.problem(method))
    factory = methods.named[method]

    kept = selection.pos + selection.neg
    held = holdout_questions(kept, holdout)
    sides = [{a.polarity for a in kept if (a.question_id in held) == h} for h in (False, True)]
    if held and not all(side == {"pos", "neg"} for side in sides):
        log("too few kept answers to hold questions out: no held-out diagnostics")
        held = set()
    full, train = factory(), factory() if held else None
    train_part = [a for a in kept if a.question_id not in held]
    held_part = [a for a in kept if a.question_id in held]
    # the AUROCs rest on every answer of the held-out questions, not only the ones the (judge-driven) filter kept:
    # a judge-selected test set would flatter the vector
    kept_ids = {id(a) for a in held_part}
    held_rest = [a for a in answers if a.question_id in held and a.answer.strip() and id(a) not in kept_ids
                 and a.polarity in ("pos", "neg")]
    if progress is None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(kept) + 2 * len(held_rest) + len(held_part), desc="pooling activations",
                   unit="answer", leave=False)
        progress = bar.update
    # one forward pass over the training share feeds both the final and the train-only vectors, and one over
    # the kept held-out share both the final vector and the in-context diagnostics
    heldout_context, heldout_text, side_means = _Rows(), _Rows(), _SideMeans()
    if train is not None:
        _pool_into(_Tee(full, side_means, train), engine, train_part, system_prompt=True,
                   batch_size=batch_size, progress=progress)
        _pool_into(_Tee(full, side_means, heldout_context), engine, held_part, system_prompt=True,
                   batch_size=batch_size, progress=progress)
        _pool_into(heldout_context, engine, held_rest, system_prompt=True, batch_size=batch_size, progress=progress)
        _pool_into(heldout_text, engine, held_part + held_rest, system_prompt=False, batch_size=batch_size,
                   progress=progress)
    else:
        _pool_into(_Tee(full, side_means), engine, kept, system_prompt=True, batch_size=batch_size, progress=progress)
    vectors = {f"{kind}_diff": v for kind, v in full.result().items()}
    train_vectors = {f"{kind}_diff": v for kind, v in train.result().items()} if train is not None else None
    diagnostics = _diagnostics(vectors, train_vectors, heldout_text.result(), heldout_context.result())

    meta = {
        "model": model_name,
        "trait": trait,
        "method": method,
        "layer_convention": activations.LAYER_CONVENTION,
        "filter": mode,
        "threshold": threshold,
        "coherence_threshold": coherence,
        "pos_samples": len(selection.pos),
        "neg_samples": len(selection.neg),
        "dropped": dict(selection.dropped),
        "heldout_questions": sorted(held),
        "heldout_set": "every non-empty answer of the held-out questions, kept by the filter or not",
        "judge": judge,
        "source_logs": list(sources),
        "dtype": str(engine.dtype).removeprefix("torch."),  # the model's, for the forward passes (pooling is float32)
        "diagnostics": diagnostics,
        BASELINE_KEY: side_means.baseline(vectors["response_avg_diff"]),
    }
    vector_file = VectorFile(tensors=vectors, metadata=meta)
    path = save_vectors(vector_file, out)
    return ExtractionResult(Path(path), vector_file, selection, diagnostics)


class _Rows:
    """Keep every pooled row per polarity: the few held-out answers the diagnostics project."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, list[torch.Tensor]]] = {}

    def add(self, polarity: str, pooled: dict[str, torch.Tensor]) -> None:
        for kind, t in pooled.items():
            self.parts.setdefault(polarity, {}).setdefault(kind, []).append(t)

    def result(self) -> dict[str, dict[str, torch.Tensor]]:
        return {pol: {kind: torch.cat(ts) for kind, ts in kinds.items()} for pol, kinds in self.parts.items()}


class _SideMeans:
    """Running sums of each side's response means: where the kept answers sit on the vector (its baseline)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: Counter = Counter()

    def add(self, polarity: str, pooled: dict[str, torch.Tensor]) -> None:
        rows = pooled["response_avg"].double()
        self.sums[polarity] = self.sums[polarity] + rows.sum(0) if polarity in self.sums else rows.sum(0)
        self.counts[polarity] += rows.shape[0]

    def baseline(self, vector: torch.Tensor) -> dict:
        """Per layer, each side's mean projection on the unit `response_avg_diff` vector (see `files.Baseline`).

        A projection is linear, so the mean of the answers' projections is the projection of their mean.
        """
        rows = vector.double()
        unit = rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return {"kind": "response_avg_diff",
                **{side: ((self.sums[side] / self.counts[side]) * unit).sum(-1).tolist() for side in ("neg", "pos")}}


class _Tee:
    """Feed one stream of batches to several accumulators."""

    def __init__(self, *methods) -> None:
        self.methods = methods

    def add(self, polarity: str, pooled: dict[str, torch.Tensor]) -> None:
        for m in self.methods:
            m.add(polarity, pooled)


# --- from logs ------------------------------------------------------------------------------------


def extract_from_logs(
    logs: Sequence[str] = (),
    *,
    log_dir: str | Path | None = None,
    trait: str | None = None,
    model: str | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    dtype: str = "float32",
    export_pt: bool = False,
    log: Callable[[str], None] = print,
    **options,
) -> ExtractionResult:
    """The Python API behind `pv extract`: read logs, check they agree, load the model, extract, report.

    `logs` are persona_collect logs (pos, neg, or both in one); or give `log_dir` and `trait` to use
    the newest ones there. The model runs in float32 by default (parity with the paper's vectors), whatever
    the generation engine's CPU default; `dtype="bfloat16"` is faster on CPUs with native bf16.
    """
    from pv_harness import models
    from pv_harness.atomic import path_component
    from pv_harness.logs import COLLECTION_TASK, read_collection_log
    from pv_harness.reports.extraction import write_extraction_report
    from pv_harness.vectors.files import export_pt as write_pt

    if not logs:
        if not (log_dir and trait):
            raise ValueError("give collection logs, or a log dir and a trait")
        logs = find_collection_logs(log_dir, trait, model)
    read = [read_collection_log(p, task=COLLECTION_TASK) for p in logs]
    traits = {lg.trait for lg in read}
    if len(traits) != 1 or (trait and trait not in traits):
        raise ValueError(f"the logs are for traits {sorted(traits)}" + (f", not {trait!r}" if trait else ""))
    trait = path_component(traits.pop(), what="the logs' trait")  # it names the vector files
    answers = [a for lg in read for a in lg.answers]
    sides = {a.polarity for a in answers}
    if sides != {"pos", "neg"}:
        held = sorted(str(side) for side in sides) or "none"
        raise ValueError(f"need both pos and neg answers; the logs hold only {held} (give persona_collect logs)")
    subjects = {lg.model for lg in read}
    if model is None:
        if len(subjects) != 1:
            raise ValueError(f"the logs come from different models {sorted(subjects)}; pass --model")
        model = next(iter(subjects))
    others = sorted(s for s in subjects if not models.same_model(s, model))
    if others:
        log(f"warning: extracting with {model}, but the logs were written by {', '.join(others)}: a persona vector "
            "is meant to come from the model that wrote the answers (pass that model, or drop --model)")
    log(f"{len(answers)} answers from {len(read)} log(s); trait {trait}, model {model}")
    if out is None:  # the model's name becomes a folder inside vectors/
        out = Path("vectors") / path_component(models.slug(model), what="the model name") / f"{trait}.safetensors"
    out = Path(out)
    engine = Engine.load(models.local_path(model), device=device, dtype=dtype)
    graders = sorted({lg.grader for lg in read if lg.grader})
    result = extract(answers, model_name=model, engine=engine, out=out, trait=trait,
                     judge=", ".join(graders) or None, sources=[lg.path for lg in read], log=log, **options)
    report = write_extraction_report(result, out.with_suffix(".report.html"))
    log(f"vectors: {result.path}\nreport:  {report}")
    if export_pt:
        for path in write_pt(result.vectors, out.parent, trait):
            log(f"paper format: {path}")
    return result
