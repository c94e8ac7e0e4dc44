"""What bfloat16 on CPU changes against float32, on the embedded SmolLM2: answers, judge scores, vectors.

    python benchmarks/bf16.py [--traits evil,sycophantic,hallucinating] [--questions 4] [--max-tokens 48]
                              [--vector-answers 10] [--log-dir pv-runs] [--json out.json]

Two engines on one model, float32 and bfloat16 (each as `pv/` loads it: prepacked linears, default threads).
- Answers: for each trait, its first `questions` evaluation questions under the pos and the neg persona
  system prompt of instruction pair 0 (24 prompts by default), greedy, `max_tokens` new tokens, all in one
  batch on each engine. Reported: the share of identical answers (token ids) and the mean common-prefix length.
- Judge: the float32 answers scored by the likelihood judge's maths (scorers/likelihood.py: per instruction
  pair, sigmoid(log p(a | pos system, q) - log p(a | neg system, q)), mean over pairs x 100, no end-of-turn)
  with `Engine.score` on each engine, over the first `--pairs` pairs. Reported: mean and max |bf16 - fp32| on
  the 0-100 scale, n answers.
- Vectors: `--vector-answers` pos and as many neg answers, from the newest persona_collect logs of the first
  trait under `--log-dir` (a `pv run` folder's logs), else the float32 greedy answers above; pooled on each
  engine (activations accumulated in float32), mean(pos) - mean(neg) per layer; reported: the cosine between
  the float32 and the bfloat16 vector per layer (min, median, and the middle layers), for each kind.
Prints a table, then one JSON line. Speed is not measured here (benchmarks/provider.py does that).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from pv_harness.tasks.persona import system_prompt

from pv_harness import models, plugin_manager
from pv_harness.estimates import mean_interval
from pv_harness.logs import CollectedAnswer, LogError, find_collection_logs, read_collection_log
from pv_harness.provider.engine import Engine, GenRequest, ScoreRequest
from pv_harness.vectors import activations


def prompts(traits: list[str], questions: int) -> list[dict[str, Any]]:
    """(trait, polarity, system prompt, question) for each trait's first evaluation questions."""
    out = []
    for name in traits:
        trait = plugin_manager.get_trait(name)
        pair = trait.instructions[0]
        for polarity, instruction in (("pos", pair.pos), ("neg", pair.neg)):
            for question in trait.evaluation_questions[:questions]:
                out.append({"trait": name, "polarity": polarity, "question": question,
                            "system": system_prompt(trait.assistant_name(polarity), instruction)})
    return out


def messages(system: str, question: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def greedy(engine: Engine, items: list[dict[str, Any]], max_tokens: int) -> list[list[int]]:
    requests = [GenRequest(prompt_ids=engine.encode(engine.chat_text(messages(p["system"], p["question"]))),
                           max_new_tokens=max_tokens) for p in items]
    return [r.token_ids for r in engine.generate(requests)]


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def likelihood_scores(engine: Engine, trait: str, question: str, answers: list[str], pairs: int) -> list[float]:
    """The likelihood judge's trait scores (0-100) of answers to one question, computed with this engine."""
    t = plugin_manager.get_trait(trait)
    probs: list[list[float]] = [[] for _ in answers]
    for pair in t.instructions[:pairs]:
        logp = []
        for polarity, instruction in (("pos", pair.pos), ("neg", pair.neg)):
            text = engine.chat_text(messages(system_prompt(t.assistant_name(polarity), instruction), question))
            ids = engine.encode(text)
            conts = [engine.continuation_ids(text, ids, a, False) for a in answers]
            logp.append(engine.score(ScoreRequest(prompt_ids=ids, continuations=conts)).logprobs)
        for i, (pos, neg) in enumerate(zip(*logp, strict=True)):
            probs[i].append(1.0 / (1.0 + math.exp(-(pos - neg))))
    return [100.0 * sum(p) / len(p) for p in probs]


def vector_answers(log_dir: Path, trait: str, n: int, fallback: list[CollectedAnswer]) -> tuple[list, str]:
    """n pos and n neg answers of the newest collection of `trait` under log_dir (any run folder), else fallback."""
    for folder in sorted({p.parent for p in log_dir.glob("**/*.eval")}) if log_dir.exists() else []:
        try:
            logs = find_collection_logs(folder, trait)
        except LogError:
            continue
        answers = [a for p in logs for a in read_collection_log(p).answers if a.answer.strip()]
        picked = [a for side in ("pos", "neg") for a in [a for a in answers if a.polarity == side][:n]]
        if len({a.polarity for a in picked}) == 2:
            return picked, f"{len(picked)} answers from {folder}"
    return fallback, f"{len(fallback)} float32 greedy answers (no collection log of {trait} under {log_dir})"


def vectors(engine: Engine, answers: list[CollectedAnswer]) -> dict[str, torch.Tensor]:
    """mean(pos) - mean(neg) per layer of each pooled kind, one answer at a time."""
    encoded = [activations.encode(engine.tokenizer, engine.chat_text(a.messages(True)), a.answer) for a in answers]
    sums: dict[str, dict[str, torch.Tensor]] = {"pos": {}, "neg": {}}
    counts = {"pos": 0, "neg": 0}
    for indices, pooled in activations.pool(engine.model, encoded, pad_token_id=engine.pad_id, batch_size=1):
        for row, i in enumerate(indices):
            side = str(answers[i].polarity)
            counts[side] += 1
            for kind, t in pooled.items():
                sums[side][kind] = sums[side].get(kind, 0) + t[row].double()
    return {kind: sums["pos"][kind] / counts["pos"] - sums["neg"][kind] / counts["neg"] for kind in activations.KINDS}


def ci(values: list[float]) -> list[float | None]:
    """The 95% Student's t interval of a mean."""
    estimate = mean_interval(values)
    return [estimate.low, estimate.high]


def cosine_summary(per_layer: list[float | None], middle: list[int]) -> dict[str, Any]:
    """min and median over the layers with a direction, the min over the middle layers, and every layer."""
    known = [c for c in per_layer if c is not None]
    return {"min": min(known), "median": statistics.median(known),
            "middle_min": min(c for i, c in enumerate(per_layer) if c is not None and i in middle),
            "per_layer": [None if c is None else round(c, 5) for c in per_layer]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="an installed alias or a model folder")
    parser.add_argument("--traits", default="evil,sycophantic,hallucinating")
    parser.add_argument("--questions", type=int, default=4, help="evaluation questions per trait (x pos, neg)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--pairs", type=int, default=2, help="instruction pairs the likelihood judge uses")
    parser.add_argument("--vector-answers", type=int, default=10, help="answers per side for the vectors")
    parser.add_argument("--log-dir", type=Path, default=Path("pv-runs"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    started = time.monotonic()
    path = models.local_path(args.model)
    engines = {name: Engine.load(path, device="cpu", dtype=name) for name in ("float32", "bfloat16")}
    fp32, bf16 = engines["float32"], engines["bfloat16"]
    items = prompts(args.traits.split(","), args.questions)

    answers = {name: greedy(e, items, args.max_tokens) for name, e in engines.items()}
    phases = {"generate": time.monotonic() - started}
    same = [a == b for a, b in zip(answers["float32"], answers["bfloat16"], strict=True)]
    prefix = [common_prefix(a, b) for a, b in zip(answers["float32"], answers["bfloat16"], strict=True)]
    texts = [fp32.tokenizer.decode(ids, skip_special_tokens=True) for ids in answers["float32"]]

    by_question: dict[tuple[str, str], list[str]] = {}  # the pos and the neg answer to a question: one pass
    for p, text in zip(items, texts, strict=True):
        if text.strip():
            by_question.setdefault((p["trait"], p["question"]), []).append(text)
    diffs = []
    for (trait, question), group in by_question.items():
        s32, s16 = (likelihood_scores(e, trait, question, group, args.pairs) for e in (fp32, bf16))
        diffs += [abs(b - a) for a, b in zip(s32, s16, strict=True)]
    phases["judge"] = time.monotonic() - started - sum(phases.values())

    fallback = [CollectedAnswer(trait=p["trait"], polarity=p["polarity"], question_id=i, instruction_id=0, epoch=1,
                                system_prompt=p["system"], question=p["question"], answer=text, trait_score=None,
                                coherence=None)
                for i, (p, text) in enumerate(zip(items, texts, strict=True)) if text.strip()]
    first = args.traits.split(",")[0]
    chosen, source = vector_answers(args.log_dir, first,
                                    args.vector_answers, [a for a in fallback if a.trait == first])
    v32, v16 = vectors(fp32, chosen), vectors(bf16, chosen)
    phases["vectors"] = time.monotonic() - started - sum(phases.values())
    # a layer where the vector is zero in both (prompt_last at the embeddings: pos and neg prompts end alike) has
    # no direction to compare: left out
    cos = {kind: [float(torch.nn.functional.cosine_similarity(a, b, dim=0)) if max(a.norm(), b.norm()) > 1e-6
                  else None for a, b in zip(v32[kind], v16[kind], strict=True)] for kind in activations.KINDS}
    layers = len(v32["response_avg"])
    middle = list(range(layers // 3, 2 * layers // 3 + 1))

    result = {
        "model": args.model, "prompts": len(items), "max_tokens": args.max_tokens,
        "bf16_prepacked": bf16.prepacked, "fp32_prepacked": fp32.prepacked,
        "identical_answers": sum(same), "identical_share": sum(same) / len(same),
        "mean_common_prefix": statistics.mean(prefix), "mean_common_prefix_ci": ci(prefix),
        "mean_fp32_tokens": statistics.mean(len(a) for a in answers["float32"]),
        "judge_n": len(diffs), "judge_pairs": args.pairs,
        "judge_mean_abs_diff": statistics.mean(diffs), "judge_mean_abs_diff_ci": ci(diffs),
        "judge_max_abs_diff": max(diffs),
        "vector_source": source,
        "cosine": {kind: cosine_summary(c, middle) for kind, c in cos.items()},
        "seconds": {k: round(v, 1) for k, v in phases.items()},  # wall time per phase, on a possibly busy machine
    }
    print(f"{'measure':<46} value")
    print(f"{'identical greedy answers':<46} {sum(same)}/{len(same)} ({result['identical_share']:.0%})")
    low, high = result["mean_common_prefix_ci"]
    print(f"{'mean common prefix (tokens)':<46} {result['mean_common_prefix']:.1f} of "
          f"{result['mean_fp32_tokens']:.1f} (95% CI {low:.1f}-{high:.1f}, t)")
    low, high = result["judge_mean_abs_diff_ci"]
    print(f"{'likelihood judge |bf16 - fp32|, mean / max':<46} {result['judge_mean_abs_diff']:.2f} / "
          f"{result['judge_max_abs_diff']:.2f} (mean's 95% CI {low:.2f}-{high:.2f}, t; n={len(diffs)}, "
          f"{args.pairs} pairs)")
    print(f"vectors from {source}")
    for kind, c in result["cosine"].items():
        print(f"{'cosine fp32 vs bf16, ' + kind + ' min / median':<46} {c['min']:.4f} / {c['median']:.4f} "
              f"(layers {middle[0]}-{middle[-1]}: min {c['middle_min']:.4f})")
    line = json.dumps(result)
    print(line)
    if args.json:
        args.json.write_text(line + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
