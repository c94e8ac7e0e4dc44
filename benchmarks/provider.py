"""Generation throughput of the pv/ provider against inspect's hf/ provider, and the cost of steering + monitoring.

    python benchmarks/provider.py [--samples 16] [--max-tokens 64] [--connections 8] [--rounds 3]

One process, one model (SmolLM2 by default), one task, the same settings for every run: `samples` prompts
that ask for long answers, `max_tokens` new tokens, `connections` concurrent samples, greedy decoding
(hf/ with `-M do_sample=false`, pv/ with the model's default, which is greedy for SmolLM2), the same torch
thread count (`--threads`, set before torch loads, so both providers' worker threads get it). Each model is
loaded and warmed up once; then the runs are interleaved for `rounds` rounds, in a rotating order, so a
noisy neighbour on the machine hurts every configuration alike, and the ratios are taken within a round:

  - hf:            inspect's built-in `hf/<folder>` provider
  - pv:            `pv/<folder>`
  - pv+steer+mon:  `pv/<folder>` with a steering vector (layer 20, response positions) and a monitor (layer 20)

Throughput is output tokens (from each sample's ModelUsage) over the wall time of the whole `eval()` call.
Targets: pv >= 1.5x hf; steering and monitoring overhead <= 5%.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

TOPICS = ["a dragon", "the ocean", "a lighthouse keeper", "the history of bread", "a robot gardener", "winter",
          "a lost city", "the moon", "a jazz musician", "volcanoes", "a chess match", "the rainforest", "a train "
          "journey", "an old library", "honeybees", "a mountain village", "a time traveller", "deserts"]


def build_task(samples: int, max_tokens: int, extra_body: dict | None = None):
    from inspect_ai import Task
    from inspect_ai.dataset import Sample
    from inspect_ai.model import GenerateConfig

    dataset = [Sample(input=f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}.", id=i)
               for i in range(samples)]
    return Task(dataset=dataset, config=GenerateConfig(max_tokens=max_tokens, extra_body=extra_body),
                name="provider_benchmark")


def run(model, task, connections: int, log_dir: str) -> dict:
    """Wall seconds, this process's CPU seconds (all threads), output tokens and tokens/s for one eval."""
    from inspect_ai import eval

    start, cpu = time.perf_counter(), time.process_time()
    (log,) = eval(task, model=model, max_connections=connections, log_dir=log_dir, display="none",
                  log_realtime=False, score=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if log.status != "success":
        raise RuntimeError(f"{model} failed: {log.error}")
    tokens = sum(s.output.usage.output_tokens for s in log.samples or [] if s.output.usage)
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="smollm2", help="an installed alias or a model folder")
    parser.add_argument("--layer", type=int, default=20)
    parser.add_argument("--coef", type=float, default=4.0)
    parser.add_argument("--threads", type=int, help="torch CPU threads for both providers (default: torch's)")
    parser.add_argument("--no-prepack", action="store_true",
                        help="also run pv/ with -M prepack=false (plain PyTorch linear layers)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch loads: every thread gets it

    import torch
    from inspect_ai.model import get_model
    from safetensors.torch import save_file

    if args.threads:
        torch.set_num_threads(args.threads)

    from pv_harness import models

    folder = models.resolve(args.model)
    log_dir = tempfile.mkdtemp(prefix="pv-bench-logs-")
    hf = get_model(f"hf/{folder}", do_sample=False, **({} if torch.cuda.is_available() else {"device": "cpu"}))
    pv = get_model(f"pv/{folder}")
    engine = pv.api.engine  # type: ignore[attr-defined]
    # a random unit direction per layer: the steering work is the same whatever the vector means
    rows = torch.randn(engine.num_layers + 1, engine.hidden, generator=torch.Generator().manual_seed(0))
    vector = Path(log_dir) / "random_direction.safetensors"
    save_file({"response_avg_diff": rows / rows.norm(dim=-1, keepdim=True)}, str(vector))
    steer = {"pv": {"steer": [{"vector": str(vector), "layer": args.layer, "coef": args.coef,
                               "positions": "response"}],
                    "monitor": [{"vector": str(vector), "layer": args.layer}]}}
    configs = {
        "hf": (hf, build_task(args.samples, args.max_tokens)),
        "pv": (pv, build_task(args.samples, args.max_tokens)),
        "pv+steer+mon": (pv, build_task(args.samples, args.max_tokens, steer)),
    }
    if args.no_prepack:
        configs["pv(no prepack)"] = (get_model(f"pv/{folder}", prepack=False),
                                     build_task(args.samples, args.max_tokens))
    for name, (model, _) in configs.items():  # load, first-eval start-up, thread pools
        run(model, build_task(2, 4, steer if name == "pv+steer+mon" else None), args.connections, log_dir)

    rounds = []
    for r in range(args.rounds):
        result: dict = {}
        names = list(configs)
        for name in names[r % len(names):] + names[:r % len(names)]:
            model, task = configs[name]
            before = len(pv.api.batcher.batch_sizes)  # type: ignore[attr-defined]
            result[name] = run(model, task, args.connections, log_dir)
            if model is pv:
                result[name]["batch_sizes"] = pv.api.batcher.batch_sizes[before:]  # type: ignore[attr-defined]
        if "pv(no prepack)" in result:
            result["pv(no prepack)/hf"] = round(result["pv(no prepack)"]["tokens_per_s"]
                                                / result["hf"]["tokens_per_s"], 2)
        result["pv/hf"] = round(result["pv"]["tokens_per_s"] / result["hf"]["tokens_per_s"], 2)
        result["overhead"] = round(1 - result["pv+steer+mon"]["tokens_per_s"] / result["pv"]["tokens_per_s"], 3)
        # CPU time per token: less disturbed by other processes than wall time (meaningful with --threads 1)
        result["overhead_cpu"] = round(result["pv+steer+mon"]["cpu_seconds"] / result["pv+steer+mon"]["tokens"]
                                       / (result["pv"]["cpu_seconds"] / result["pv"]["tokens"]) - 1, 3)
        rounds.append(result)
        print(f"round {r + 1}: " + "  ".join(f"{n} {result[n]['tokens_per_s']} tok/s ({result[n]['tokens']} tok, "
                                            f"{result[n]['seconds']} s)" for n in configs)
              + f"  pv/hf {result['pv/hf']}x  steer+monitor overhead {result['overhead']:+.1%} "
              f"(CPU time {result['overhead_cpu']:+.1%})", flush=True)

    summary = {
        "model": args.model, "samples": args.samples, "max_tokens": args.max_tokens,
        "connections": args.connections, "rounds": args.rounds, "device": str(engine.device),
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "median_tokens_per_s": {n: statistics.median(r[n]["tokens_per_s"] for r in rounds) for n in configs},
        "median_pv_over_hf": statistics.median(r["pv/hf"] for r in rounds),
        **({"median_pv_no_prepack_over_hf": statistics.median(r["pv(no prepack)/hf"] for r in rounds)}
           if args.no_prepack else {}),
        "median_steer_monitor_overhead": statistics.median(r["overhead"] for r in rounds),
        "median_steer_monitor_overhead_cpu": statistics.median(r["overhead_cpu"] for r in rounds),
        "per_round": rounds,
    }
    print(json.dumps(summary, indent=2))
    print(f"\npv/ vs hf/: {summary['median_pv_over_hf']}x (target >= 1.5x); steering + monitoring overhead: "
          f"{summary['median_steer_monitor_overhead']:+.1%} wall, "
          f"{summary['median_steer_monitor_overhead_cpu']:+.1%} CPU time (target <= 5%)")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
