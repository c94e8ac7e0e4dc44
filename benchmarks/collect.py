"""Collection throughput: persona_collect requests through inspect on pv/ (static vs continuous batching, float32 vs
bfloat16), inspect's hf/ on the same folder, and the ideal of full batches.

    python benchmarks/collect.py [--workload both] [--rounds 3] [--threads 1] [--connections 16] [--json out.json]

One process. The requests are `pv_harness/persona_collect`'s own (trait `--trait`, both polarities: real extraction
questions under the persona system prompts), `--samples` of its samples spread over the dataset, `--epochs` answers
each, temperature 1, `--connections` concurrent samples, seed `--seed` + round (the same for every contender in a
round), no scoring. Two workloads:

  - paper:  the paper's shape scaled to a CPU: every request asks for `--max-tokens` new tokens;
  - uneven: each request carries its own max_tokens, drawn from `--mix` (16..256; a solver passes it to
            `generate(state, max_tokens=...)`, inspect's per-call GenerateConfig): at temperature 1 SmolLM2 mostly
            runs to max_tokens, so this is what makes lengths uneven.

Contenders, interleaved in a rotating order in every round (after one warm-up eval each):

  - pv fp32 static:      `pv/<folder>` with `-M dtype=float32 -M batching=static`
  - pv fp32 continuous:  `-M dtype=float32 -M batching=continuous`
  - pv bf16 continuous:  `-M dtype=bfloat16 -M batching=continuous`
  - hf:                  inspect's `hf/<folder>` (`-M device=cpu -M do_sample=true`: samples at temperature 1)
  - ideal:               output tokens / (decode steps at full batch x step time): the fp32 continuous contender's
                         output tokens, ceil(tokens / batch) steps of batch = min(connections, max_batch, requests)
                         rows, and the median time of `--steps` decode steps of that many rows on the fp32 engine's
                         model (one new token per row over a KV cache as long as the workload's mean decode context,
                         then sampling), measured in the same round.

A contender whose option the provider refuses is skipped, with the reason printed. Throughput is output tokens
(ModelUsage) over the wall time of the whole `eval()` call. Ratios are taken within a round; the medians are over
rounds. The last line printed is one JSON object.
Targets (uneven workload): continuous >= 1.3x static and >= 85% of ideal; bf16 >= 1.5x fp32; pv/ >= 2.5x hf/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

CONTENDERS = {  # name -> pv/ model args (None: inspect's hf/ provider)
    "pv fp32 static": {"dtype": "float32", "batching": "static"},
    "pv fp32 continuous": {"dtype": "float32", "batching": "continuous"},
    "pv bf16 continuous": {"dtype": "bfloat16", "batching": "continuous"},
    "hf": None,
}
RATIOS = {  # JSON key -> (numerator, denominator)
    "continuous_vs_static": ("pv fp32 continuous", "pv fp32 static"),
    "continuous_vs_ideal": ("pv fp32 continuous", "ideal"),
    "bf16_vs_fp32": ("pv bf16 continuous", "pv fp32 continuous"),
    "pv_vs_hf": ("pv bf16 continuous", "hf"),  # pv/'s default on a CPU with native bfloat16
    "pv_fp32_vs_hf": ("pv fp32 continuous", "hf"),
}


def pick_samples(trait: str, samples: int) -> list[Any]:
    """`samples` of persona_collect's samples (both polarities), evenly spread so questions, instructions and
    polarities all appear."""
    from pv_harness.tasks.persona import persona_collect

    dataset = list(persona_collect(trait=trait, polarity="both", judge_mode="likelihood").dataset)
    return [dataset[i * len(dataset) // samples] for i in range(min(samples, len(dataset)))]


def token_plan(samples: list[Any], epochs: int, mix: list[int] | None, max_tokens: int, seed: int) -> dict:
    """(sample id, epoch) -> max_tokens: all `max_tokens`, or `mix` cycled and shuffled so lengths interleave."""
    keys = [(s.id, e) for s in samples for e in range(1, epochs + 1)]
    if not mix:
        return dict.fromkeys(keys, max_tokens)
    sizes = [mix[i % len(mix)] for i in range(len(keys))]
    random.Random(seed).shuffle(sizes)
    return dict(zip(keys, sizes, strict=True))


def build_task(trait: str, samples: list[Any], epochs: int, plan: dict) -> Any:
    """persona_collect's dataset, config and epochs; a solver that generates with the request's own max_tokens."""
    from inspect_ai import Epochs, Task
    from inspect_ai.dataset import MemoryDataset
    from inspect_ai.solver import Generate, TaskState, solver
    from pv_harness.tasks.persona import persona_collect

    collect = persona_collect(trait=trait, polarity="both", n_per_question=epochs, temperature=1.0,
                              max_tokens=max(plan.values()), judge_mode="likelihood")

    @solver
    def generate_planned() -> Any:
        async def solve(state: TaskState, generate: Generate) -> TaskState:
            return await generate(state, max_tokens=plan[(state.sample_id, state.epoch)])

        return solve

    return Task(dataset=MemoryDataset(samples, name=collect.dataset.name), solver=generate_planned(),
                config=collect.config, epochs=Epochs(epochs), name="collect_benchmark")


def run_eval(model: Any, task: Any, connections: int, seed: int, log_dir: str) -> dict:
    """Wall seconds, output tokens (ModelUsage) and tokens/s of one eval."""
    from inspect_ai import eval

    start = time.perf_counter()
    (log,) = eval(task, model=model, max_connections=connections, seed=seed, log_dir=log_dir, display="none",
                  log_realtime=False, score=False)
    seconds = time.perf_counter() - start
    if log.status != "success":
        raise RuntimeError(f"{model} failed: {log.error}")
    tokens = sum(s.output.usage.output_tokens for s in log.samples or [] if s.output.usage)
    return {"seconds": round(seconds, 2), "tokens": tokens, "tokens_per_s": round(tokens / seconds, 1)}


def mean_decode_context(engine: Any, samples: list[Any], plan: dict) -> int:
    """The KV length an average decode step sees: mean prompt tokens + sum(m^2) / (2 sum(m)) over the requests'
    max_tokens m (each request runs to its max_tokens, and its step i sees prompt + i tokens)."""
    prompts = {s.id: len(engine.encode(engine.chat_text([{"role": m.role, "content": m.text} for m in s.input])))
               for s in samples}
    sizes = list(plan.values())
    mean_prompt = statistics.mean(prompts[sid] for sid, _ in plan)
    return round(mean_prompt + sum(m * m for m in sizes) / (2 * sum(sizes)))


def decode_step_seconds(engine: Any, rows: int, context: int, steps: int) -> float:
    """Median wall time of one decode step: `rows` new tokens over a KV cache of `context` tokens, then sampling."""
    import torch

    from pv_harness.provider.kv_cache import returned_cache, with_cache

    ids = engine.encode(" ".join(["the"] * context))[:context]
    x = torch.tensor([ids] * rows, device=engine.device)
    times = []
    with torch.inference_mode():
        out = engine.model(input_ids=x, use_cache=True, logits_to_keep=1)
        cache = returned_cache(out)
        token = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1)
        for _ in range(steps + 1):  # the first step is a warm-up
            start = time.perf_counter()
            out = engine.model(input_ids=token, use_cache=True, **with_cache(engine.model, cache))
            token = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1)
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def load_contenders(folder: str) -> tuple[dict, dict]:
    """The models that loaded, and for each that did not, why (an option this provider does not know yet)."""
    import torch
    from inspect_ai.model import get_model

    models, skipped = {}, {}
    for name, args in CONTENDERS.items():
        try:
            if args is None:
                models[name] = get_model(f"hf/{folder}", do_sample=True,
                                         **({} if torch.cuda.is_available() else {"device": "cpu"}))
            else:
                models[name] = get_model(f"pv/{folder}", **args)
        except Exception as ex:  # noqa: BLE001 - report the refusal and go on with the others
            skipped[name] = f"{type(ex).__name__}: {ex}".splitlines()[0]
            print(f"skipping {name}: the provider refused {args}: {skipped[name]}", flush=True)
    return models, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("paper", "uneven", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch CPU threads for every contender (default: torch's)")
    parser.add_argument("--trait", default="evil")
    parser.add_argument("--samples", type=int, default=8, help="distinct persona_collect samples (prompts)")
    parser.add_argument("--epochs", type=int, default=4, help="answers per sample (the paper: 10)")
    parser.add_argument("--max-tokens", type=int, default=64, help="the paper workload's max_tokens")
    parser.add_argument("--mix", default="16,32,64,128,256", help="the uneven workload's max_tokens, cycled")
    parser.add_argument("--connections", "--max-connections", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="decode steps timed for the ideal (median)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--model", default="smollm2", help="an installed alias or a model folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch loads: every thread gets it

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from pv_harness import models

    folder = models.resolve(args.model)
    log_dir = tempfile.mkdtemp(prefix="pv-bench-collect-")
    loaded, skipped = load_contenders(folder)
    fp32 = next((m for n, m in loaded.items() if "fp32" in n), None)
    samples = pick_samples(args.trait, args.samples)
    mix = [int(m) for m in args.mix.split(",")]
    workloads = {}
    for name in ("paper", "uneven") if args.workload == "both" else (args.workload,):
        plan = token_plan(samples, args.epochs, mix if name == "uneven" else None, args.max_tokens, args.seed)
        workloads[name] = {"task": build_task(args.trait, samples, args.epochs, plan), "plan": plan}
        if fp32 is not None:
            workloads[name]["context"] = mean_decode_context(fp32.api.engine, samples, plan)
    requests = len(samples) * args.epochs  # a full batch cannot hold more rows than there are requests
    batch = min(args.connections, fp32.api.max_batch if fp32 is not None else args.connections, requests)
    warm = build_task(args.trait, samples[:2], 1, token_plan(samples[:2], 1, None, 4, args.seed))
    for model in loaded.values():  # load, first-eval start-up, thread pools
        run_eval(model, warm, args.connections, args.seed, log_dir)

    rounds: list[dict] = []
    names = list(loaded) + (["ideal"] if fp32 is not None else [])
    for r in range(args.rounds):
        result: dict[str, Any] = {}
        for wname, work in workloads.items():
            figures: dict[str, Any] = {}
            for name in names[r % len(names):] + names[:r % len(names)]:
                if name == "ideal":
                    figures[name] = {"step_seconds": decode_step_seconds(fp32.api.engine, batch, work["context"],
                                                                         args.steps)}
                else:
                    figures[name] = run_eval(loaded[name], work["task"], args.connections, args.seed + r, log_dir)
            if "ideal" in figures and "pv fp32 continuous" in figures:
                tokens = figures["pv fp32 continuous"]["tokens"]
                ideal = figures["ideal"]
                ideal["tokens"] = tokens
                ideal["tokens_per_s"] = round(tokens / (math.ceil(tokens / batch) * ideal["step_seconds"]), 1)
            for key, (top, bottom) in RATIOS.items():
                if top in figures and bottom in figures and "tokens_per_s" in figures[bottom]:
                    figures[key] = round(figures[top]["tokens_per_s"] / figures[bottom]["tokens_per_s"], 3)
            result[wname] = figures
            print(f"round {r + 1} {wname}: " + "  ".join(
                f"{n} {figures[n].get('tokens_per_s')} tok/s ({figures[n].get('tokens')} tok"
                + (f", {figures[n]['seconds']} s)" if "seconds" in figures[n]
                   else f", step {figures[n]['step_seconds'] * 1000:.1f} ms x {batch} rows)")
                for n in names if n in figures)
                + "  " + "  ".join(f"{k} {figures[k]}" for k in RATIOS if k in figures), flush=True)
        rounds.append(result)

    summary: dict[str, Any] = {
        "model": args.model, "trait": args.trait, "samples": args.samples, "epochs": args.epochs,
        "max_tokens": args.max_tokens, "mix": mix, "connections": args.connections, "ideal_batch": batch,
        "rounds": args.rounds, "seed": args.seed, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()], "skipped": skipped,
        "decode_context": {w: work.get("context") for w, work in workloads.items()},
    }
    for wname in workloads:
        prefix = "" if wname == "uneven" else f"{wname}_"
        summary[f"{prefix}median_tokens_per_s"] = {
            n: statistics.median(r[wname][n]["tokens_per_s"] for r in rounds) for n in names
            if all("tokens_per_s" in r[wname].get(n, {}) for r in rounds)}
        for key in RATIOS:
            values = [r[wname][key] for r in rounds if key in r[wname]]
            summary[f"{prefix}{key}"] = statistics.median(values) if values else None
    summary["per_round"] = rounds
    for wname in workloads:
        prefix = "" if wname == "uneven" else f"{wname}_"
        print(f"\n{wname} workload, medians over {args.rounds} rounds: "
              + ", ".join(f"{k} {summary[prefix + k]}" for k in RATIOS)
              + (" (targets: continuous_vs_static >= 1.3, continuous_vs_ideal >= 0.85, bf16_vs_fp32 >= 1.5, "
                 "pv_vs_hf >= 2.5)" if wname == "uneven" else ""))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
