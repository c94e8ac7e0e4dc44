"""Predicting what fine-tuning did (shift) and what training data will do (screening), from a persona vector.

Shift: the mean hidden state at the last prompt token over the trait's evaluation questions (user turn
only, no system prompt), fine-tuned model minus base model, projected on the unit vector at one layer.
A positive shift means fine-tuning moved the model toward the trait before it says a word.

Screening: per training example, the mean response-token hidden state of the dataset's answer projected on
the unit vector, minus the same for the base model's own (greedy) answer to the same prompt. Large values
flag examples that push the model toward the trait.

Layers follow the hidden-states convention (0 = embeddings, l = output of block l). The null for shift is
the same projection on random directions with the vector's norm (projected as unit vectors, like the
vector itself): if the trait direction is special, its shifts track the trait scores and theirs do not.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pv_harness.vectors.activations import Encoded, encode, pool
from pv_harness.vectors.files import DEFAULT_KIND, check_vector, load_vector_rows


def unit(v: torch.Tensor) -> torch.Tensor:
    norm = float(v.norm())
    if norm == 0.0:
        raise ValueError("the vector is all zeros: there is no direction to project on")
    return v.float() / norm


def load_engine(model: str) -> Any:
    """The model's engine, loaded as the `pv/` provider loads it: one copy shared with the evaluations."""
    from pv_harness.models import local_path
    from pv_harness.provider.engine import Engine

    return Engine.load(local_path(model))


def prompt_last_mean(engine: Any, questions: Sequence[str], *, batch_size: int = 8) -> torch.Tensor:
    """`[L+1, H]`: the mean over questions of every layer's hidden state at the last prompt token."""
    items = []
    for q in questions:
        ids = engine.encode(engine.chat_text([{"role": "user", "content": q}]))
        items.append(Encoded([*ids, engine.end_of_turn_id], len(ids)))  # the extra token is never attended to
    total = None
    for _, pooled in pool(engine.model, items, pad_token_id=engine.pad_id, batch_size=batch_size):
        s = pooled["prompt_last"].double().sum(0)
        total = s if total is None else total + s
    assert total is not None, "no questions"
    return (total / len(items)).float()


def projection_shift(base_mean: torch.Tensor, model_mean: torch.Tensor, vector: torch.Tensor) -> float:
    """(model - base) . v / |v| for one layer's `[H]` means."""
    return float((model_mean.float() - base_mean.float()) @ unit(vector))


def random_directions(hidden: int, count: int, norm: float, seed: int = 0) -> torch.Tensor:
    """`[count, hidden]` Gaussian directions scaled to `norm` (norm-matched to a persona vector)."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(count, hidden, generator=g)
    return r / r.norm(dim=1, keepdim=True) * norm


def default_layer(vector: str | Path, num_layers: int) -> int:
    """The layer the steering sweep chose for this vector file, else the middle layer."""
    from pv_harness.reports.sweep import read_layer_choice

    choice = read_layer_choice(vector) if Path(vector).suffix == ".safetensors" else None
    if choice and isinstance(choice.get("layer"), int):
        return int(choice["layer"])
    return num_layers // 2


def vector_trait(vector: str | Path) -> str | None:
    from pv_harness.vectors.files import read_any

    return read_any(vector).metadata.get("trait")


@dataclass
class ShiftResult:
    base: str
    model: str
    trait: str
    layer: int
    shift: float
    base_projection: float
    model_projection: float
    questions: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compute_shift(base: str, model: str, vector: str | Path, *, layer: int | None = None,
                  trait: str | None = None, kind: str = DEFAULT_KIND, engines: dict[str, Any] | None = None,
                  means: dict[str, torch.Tensor] | None = None) -> ShiftResult:
    """`pv shift`: the fine-tuning shift of `model` against `base` along the vector at `layer`.

    `means` (model id -> `[L+1, H]` mean) is a cache filled as models are run, so an experiment runs
    each model once for all its vectors and random directions. The vector is checked against the models
    before either one runs.
    """
    from pv_harness import plugin_manager

    trait = trait or vector_trait(vector)
    if not trait:
        raise ValueError(f"{vector} does not say its trait; pass --trait")
    questions = plugin_manager.get_trait(trait).evaluation_questions
    rows = load_vector_rows(vector, kind)
    means = means if means is not None else {}
    keys = {name: f"{name}::{trait}" for name in (base, model)}
    loaded = {name: (engines or {}).get(name) or load_engine(name) for name, key in keys.items() if key not in means}
    shapes = {name: (engine.hidden, engine.num_layers) for name, engine in loaded.items()}
    shapes |= {name: (means[key].shape[1], means[key].shape[0] - 1) for name, key in keys.items() if key in means}
    if shapes[base] != shapes[model]:
        raise ValueError(f"{base} and {model} differ in shape (hidden size, layers): {shapes[base]} and "
                         f"{shapes[model]}; a shift compares a fine-tuned model with its own base")
    hidden, num_layers = shapes[base]
    layer = default_layer(vector, num_layers) if layer is None else layer
    v = check_vector(rows, hidden, num_layers, f"{vector} ({kind})", layer=layer, direction=True)
    for name, engine in loaded.items():
        means[keys[name]] = prompt_last_mean(engine, questions)
    b, m = means[keys[base]][layer], means[keys[model]][layer]
    u = unit(v)
    result = ShiftResult(base=base, model=model, trait=trait, layer=layer, shift=projection_shift(b, m, v),
                         base_projection=float(b @ u), model_projection=float(m @ u), questions=len(questions))
    if not all(math.isfinite(x) for x in (result.shift, result.base_projection, result.model_projection)):
        raise ValueError(f"the activations of {base} or {model} at layer {layer} are not finite (NaN or infinite), "
                         "so there is no shift to report: check the models load and run in this dtype")
    return result


# --- data screening -------------------------------------------------------------------------------------


def response_projections(engine: Any, prompts: Sequence[str], answers: Sequence[str], layer: int,
                         vector: torch.Tensor, *, batch_size: int = 8) -> list[float]:
    """Per (prompt text, answer): mean response hidden state at `layer` projected on the unit vector."""
    u = unit(vector)
    items = [encode(engine.tokenizer, p, a if a.strip() else " ") for p, a in zip(prompts, answers, strict=True)]
    out = [0.0] * len(items)
    for indices, pooled in pool(engine.model, items, pad_token_id=engine.pad_id, batch_size=batch_size):
        values = pooled["response_avg"][:, layer] @ u
        for i, v in zip(indices, values.tolist(), strict=True):
            out[i] = float(v)
    return out


def base_answers(engine: Any, prompts: Sequence[str], *, max_new_tokens: int = 256, batch_size: int = 8) -> list[str]:
    """The model's own greedy answers to already-templated prompts."""
    from pv_harness.provider.engine import GenRequest

    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        reqs = [GenRequest(prompt_ids=engine.encode(p), max_new_tokens=max_new_tokens)
                for p in prompts[start:start + batch_size]]
        answers += [r.text for r in engine.generate(reqs)]
    return answers


def screen(engine: Any, examples: Sequence[dict[str, Any]], vector: torch.Tensor, layer: int, *,
           own_answers: Sequence[str] | None = None, max_new_tokens: int = 256,
           batch_size: int = 8) -> list[dict[str, Any]]:
    """Per example: `data_projection`, `base_projection` (the model's own answer), `difference`."""
    prompts = [engine.chat_text(ex["messages"][:-1]) for ex in examples]
    data = [ex["messages"][-1]["content"] for ex in examples]
    own = list(own_answers) if own_answers is not None else base_answers(engine, prompts,
                                                                         max_new_tokens=max_new_tokens,
                                                                         batch_size=batch_size)
    p_data = response_projections(engine, prompts, data, layer, vector, batch_size=batch_size)
    p_own = response_projections(engine, prompts, own, layer, vector, batch_size=batch_size)
    bad = [i for i, (d, o) in enumerate(zip(p_data, p_own, strict=True)) if not (math.isfinite(d) and math.isfinite(o))]
    if bad:
        raise ValueError(f"the model's activations at layer {layer} are not finite (NaN or infinite) for example(s) "
                         f"{', '.join(map(str, bad[:10]))}{' ...' if len(bad) > 10 else ''}: no scores to write")
    return [{"index": i, "data_projection": d, "base_projection": o, "difference": d - o, "base_answer": a}
            for i, (d, o, a) in enumerate(zip(p_data, p_own, own, strict=True))]


def summarise(scores: Sequence[dict[str, Any]]) -> dict[str, float]:
    if not scores:
        raise ValueError("there are no screened examples to summarise")
    diffs = sorted(s["difference"] for s in scores)
    n = len(diffs)
    mean = statistics.fmean(diffs)
    sd = statistics.stdev(diffs, mean) if n > 1 else 0.0

    def q(p: float) -> float:
        return diffs[min(n - 1, max(0, round(p * (n - 1))))]

    return {"examples": n, "mean": mean, "sd": sd, "min": diffs[0], "p25": q(0.25), "median": q(0.5),
            "p75": q(0.75), "max": diffs[-1]}
