"""The likelihood judge's cost against generating the answers it judges, on one pv/ model in one process.

    python benchmarks/judge.py [--samples 8] [--epochs 2] [--max-tokens 64] [--connections 16] [--rounds 3]

Each round first generates the answers: `persona_collect` for a trait (persona system prompt + question,
temperature 1, `max_tokens` new tokens, seed `--seed` + round, so every round judges new answers: the judge
remembers answers it has scored), its first `samples` samples x `epochs` answers, with
`connections` concurrent samples and no scoring. Then it judges those same answers with the likelihood
judge, `trait_judge(trait, judge_mode="likelihood", likelihood_pairs=K)`, through inspect's
`score(log, scorers, model=<the same pv/ model>)`, once for each K in (1, 2, 0 = all pairs), in a rotating
order. The engine's prompt caches are cleared before each judge run, so every run starts cold (a prompt
shared by several answers is run once within a run, as in a real one). Times are wall seconds of the
whole `eval()` / `score()` call; tokens are the generated tokens (ModelUsage) and the answer tokens the
judge scored (one pass per persona prompt). The ratio judge / generate is taken within a round.
Target: judge time <= generation time at the judge's default K.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any


def counting(engine: Any) -> dict[str, int]:
    """Wrap the engine's scoring to count passes, scored tokens and prompt passes (prompt-cache misses)."""
    counts = {"passes": 0, "continuations": 0, "scored_tokens": 0, "prompt_passes": 0}
    score, get = engine.score, engine.prompt_caches.get

    def counted_score(request: Any) -> Any:
        counts["passes"] += 1
        counts["continuations"] += len(request.continuations)
        counts["scored_tokens"] += sum(len(c) for c in request.continuations)
        return score(request)

    def counted_get(prompt_ids: list[int]) -> Any:
        kept = get(prompt_ids)
        counts["prompt_passes"] += kept is None
        return kept

    engine.score, engine.prompt_caches.get = counted_score, counted_get
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trait", default="evil")
    parser.add_argument("--samples", type=int, default=8, help="persona_collect samples (questions x instructions)")
    parser.add_argument("--epochs", type=int, default=2, help="answers per sample")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pairs", default="1,2,0", help="likelihood_pairs values to judge with (0 = all)")
    parser.add_argument("--model", default="smollm2", help="an installed alias or a model folder")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch loads: every thread gets it

    import torch
    from inspect_ai import eval, score
    from inspect_ai.model import get_model

    if args.threads:
        torch.set_num_threads(args.threads)

    from pv_harness.scorers.judge import trait_judge
    from pv_harness.scorers.likelihood import LIKELIHOOD_PAIRS
    from pv_harness.tasks.persona import persona_collect

    from pv_harness import models

    log_dir = tempfile.mkdtemp(prefix="pv-bench-judge-")
    model = get_model(f"pv/{models.resolve(args.model)}")
    engine = model.api.engine  # type: ignore[attr-defined]
    counts = counting(engine)
    pairs = [int(k) for k in args.pairs.split(",")]

    def task(epochs: int, max_tokens: int) -> Any:
        return persona_collect(trait=args.trait, polarity="pos", n_per_question=epochs, temperature=1.0,
                               max_tokens=max_tokens, judge_mode="likelihood")

    def generate(samples: int, epochs: int, max_tokens: int, seed: int) -> tuple[Any, dict[str, Any]]:
        start = time.perf_counter()
        (log,) = eval(task(epochs, max_tokens), model=model, limit=samples, seed=seed,
                      max_connections=args.connections, log_dir=log_dir, display="none", log_realtime=False,
                      score=False)
        seconds = time.perf_counter() - start
        if log.status != "success":
            raise RuntimeError(f"generation failed: {log.error}")
        tokens = sum(s.output.usage.output_tokens for s in log.samples or [] if s.output.usage)
        return log, {"seconds": round(seconds, 2), "answers": len(log.samples or []), "tokens": tokens,
                     "tokens_per_s": round(tokens / seconds, 1)}

    def judge(log: Any, k: int) -> dict[str, Any]:
        engine.prompt_caches.clear()
        before = dict(counts)
        start = time.perf_counter()
        scored = score(log, [trait_judge(args.trait, judge_mode="likelihood", likelihood_pairs=k)], model=model,
                       display="none")
        seconds = time.perf_counter() - start
        values = [next(iter(s.scores.values())).value for s in scored.samples or [] if s.scores]
        if not values or not all(isinstance(v, int | float) for v in values):
            raise RuntimeError(f"likelihood_pairs={k}: some answers were not scored: {values}")
        got = {name: counts[name] - before[name] for name in counts}
        return {"seconds": round(seconds, 2), **got, "tokens_per_s": round(got["scored_tokens"] / seconds, 1)}

    warm, _ = generate(2, 1, 4, args.seed - 1)  # load, first-eval start-up, the scoring pass's first-use check
    for k in pairs:
        judge(warm, k)

    rounds = []
    for r in range(args.rounds):
        log, gen = generate(args.samples, args.epochs, args.max_tokens, args.seed + r)
        result: dict[str, Any] = {"generate": gen}
        for k in pairs[r % len(pairs):] + pairs[:r % len(pairs)]:
            result[f"judge K={k}"] = judge(log, k)
        for k in pairs:
            result[f"ratio K={k}"] = round(result[f"judge K={k}"]["seconds"] / gen["seconds"], 2)
        rounds.append(result)
        print(f"round {r + 1}: generate {gen['seconds']} s ({gen['answers']} answers, {gen['tokens']} tok)  "
              + "  ".join(f"judge K={k} {result[f'judge K={k}']['seconds']} s "
                          f"({result[f'judge K={k}']['scored_tokens']} tok, {result[f'judge K={k}']['passes']} "
                          f"passes, {result[f'judge K={k}']['prompt_passes']} prompts) "
                          f"ratio {result[f'ratio K={k}']}" for k in pairs), flush=True)

    summary = {
        "model": args.model, "trait": args.trait, "samples": args.samples, "epochs": args.epochs,
        "max_tokens": args.max_tokens, "connections": args.connections, "rounds": args.rounds, "seed": args.seed,
        "device": str(engine.device), "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "median_generate_seconds": statistics.median(r["generate"]["seconds"] for r in rounds),
        "median_judge_seconds": {k: statistics.median(r[f"judge K={k}"]["seconds"] for r in rounds) for k in pairs},
        "median_ratio": {k: statistics.median(r[f"ratio K={k}"] for r in rounds) for k in pairs},
        "default_pairs": LIKELIHOOD_PAIRS,
        "per_round": rounds,
    }
    print("\njudge / generate (median): " + ", ".join(f"K={k} {summary['median_ratio'][k]}" for k in pairs)
          + f" (target <= 1 at the default K={LIKELIHOOD_PAIRS})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
