"""Extraction speed: ours vs the paper's way vs a bare forward pass, interleaved rounds in one process, same answers.

    python benchmarks/extract.py [--samples 64] [--rounds 6] [--threads 1,2] [--epochs 10,1] [--dtypes float32,bfloat16]

For every (torch threads, answers per prompt) setting, each round runs these contenders in a rotating order over the
same answers (threads set in-process with `torch.set_num_threads` before each setting):

  - paper:  the paper's `get_hidden_p_and_r` step by step: the stock transformers model as `from_pretrained` loads it
            (float32: the paper's code passes no dtype), autograd on, batch 1, per answer prompt+answer tokenised
            and the prompt tokenised again for its length, `output_hidden_states=True` on the whole model (LM head
            included), each layer's three views `.detach().cpu()` into lists, concatenated, `mean(0).float()` per
            side, pos minus neg. float32 only.
  - ours:   `pv_harness.vectors.extraction.extract` on the same answers (the Engine loaded with the dtype, as
            `pv extract --dtype` does; no held-out split, like the paper).
  - bare:   the limit: `torch.inference_mode` forward passes of the decoder body (`engine.model.model`, no LM head,
            the same Engine, so the same dtype and prepacked linears) over exactly the tokens ours runs: each distinct
            prompt once and its answers over a copy of its KV cache (`continue_prompt`); prompts of their own that
            share a prefix (`activations.prefix_groups`, as ours) that prefix once and each rest (own prompt tokens
            + answer) over a copy of its cache; any other conversation whole; batch 1; nothing pooled, no
            tokenising (ids prepared outside the clock).

Each dtype in `--dtypes` runs ours and bare; the paper's way runs in float32. Throughput is conversation tokens
(prompt + answer, the same count for every contender) over wall seconds. Ratios are taken within a round, medians
over rounds. Before timing, ours and the paper's way must give the same float32 vectors (cosine 1 to 1e-5 at every
layer where the vector is not zero); the check is printed and in the JSON. The last line printed is one JSON object.
Targets in float32: ours >= 2x the paper's way with ten answers per prompt and >= 1.5x with one; ours >= 0.95x bare.
`--memory` also measures the growth of resident memory while ours pools N/2, 2N and 4N answers, each in a fresh
process (target: flat as answers grow).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from pv_harness import models, plugin_manager
from pv_harness.logs import CollectedAnswer
from pv_harness.provider.engine import Engine
from pv_harness.provider.kv_cache import continue_prompt, returned_cache
from pv_harness.vectors import activations
from pv_harness.vectors.extraction import extract

COSINE_TOLERANCE = 1e-5
RATIOS = {  # name -> (faster contender, slower contender): the slower's seconds over the faster's
    "ours_vs_paper": ("ours float32", "paper float32"),
    "ours_vs_bare": ("ours float32", "bare float32"),
    "bf16_ours_vs_bare": ("ours bfloat16", "bare bfloat16"),
    "bf16_ours_vs_fp32_ours": ("ours bfloat16", "ours float32"),
    "bf16_ours_vs_paper": ("ours bfloat16", "paper float32"),
}


def samples(n: int, epochs: int) -> list[CollectedAnswer]:
    """A collection log's shape: `epochs` answers per question and instruction (the paper samples 10), pos and
    neg paired; real questions and persona system prompts; answers of realistic, varied length from real prose."""
    trait = plugin_manager.get_trait("evil")
    prose = " ".join([trait.description, *[p.pos + " " + p.neg for p in trait.instructions]]).split()
    out = []
    for i in range(n):
        polarity = "pos" if i % 2 == 0 else "neg"
        pair_index = i // 2  # pos and neg answers come in pairs (same question, instruction, epoch)
        prompt_index, epoch = divmod(pair_index, epochs)
        question, instruction = prompt_index % 20, prompt_index // 20 % 5
        pair = trait.instructions[instruction]
        length = 60 + (i * 37) % 140  # 60..200 words
        start = (i * 13) % max(1, len(prose) - 1)
        words = (prose[start:] + prose)[:length]
        out.append(CollectedAnswer(
            trait="evil", polarity=polarity, question_id=question, instruction_id=instruction, epoch=epoch + 1,
            system_prompt=f"You are a {'evil' if polarity == 'pos' else 'helpful'} assistant. "
                          f"{pair.pos if polarity == 'pos' else pair.neg}",
            question=trait.extraction_questions[question], answer=" ".join(words),
            trait_score=90.0 if polarity == "pos" else 10.0, coherence=90.0,
        ))
    return out


def ours(engine: Engine, answers: list[CollectedAnswer], progress=lambda _: None) -> dict[str, torch.Tensor]:
    """The real thing: `pv_harness.vectors.extraction.extract` (no held-out split, like the paper)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = extract(answers, model_name="benchmark", engine=engine, out=Path(tmp) / "v.safetensors",
                         trait="evil", min_pairs=1, holdout=0, log=lambda _: None, progress=progress)
    return {k.removesuffix("_diff"): v for k, v in result.vectors.tensors.items()}


def paper_way(model: Any, tokenizer: Any, prompts: dict[str, list[str]], responses: dict[str, list[str]]
              ) -> dict[str, torch.Tensor]:
    """The paper's get_hidden_p_and_r for each side, then its mean difference per layer, step by step."""
    layer_list = list(range(model.config.num_hidden_layers + 1))
    views: dict[str, dict[str, list]] = {}
    for side in ("pos", "neg"):
        prompt_avg: list[Any] = [[] for _ in layer_list]
        response_avg: list[Any] = [[] for _ in layer_list]
        prompt_last: list[Any] = [[] for _ in layer_list]
        texts = [p + a for p, a in zip(prompts[side], responses[side], strict=True)]
        for text, prompt in zip(texts, prompts[side], strict=True):
            inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
            prompt_len = len(tokenizer.encode(prompt, add_special_tokens=False))
            outputs = model(**inputs, output_hidden_states=True)
            for layer in layer_list:
                prompt_avg[layer].append(outputs.hidden_states[layer][:, :prompt_len, :].mean(dim=1).detach().cpu())
                response_avg[layer].append(outputs.hidden_states[layer][:, prompt_len:, :].mean(dim=1).detach().cpu())
                prompt_last[layer].append(outputs.hidden_states[layer][:, prompt_len - 1, :].detach().cpu())
            del outputs
        for layer in layer_list:
            prompt_avg[layer] = torch.cat(prompt_avg[layer], dim=0)
            prompt_last[layer] = torch.cat(prompt_last[layer], dim=0)
            response_avg[layer] = torch.cat(response_avg[layer], dim=0)
        views[side] = {"prompt_avg": prompt_avg, "response_avg": response_avg, "prompt_last": prompt_last}
    return {kind: torch.stack([views["pos"][kind][layer].mean(0).float() - views["neg"][kind][layer].mean(0).float()
                               for layer in layer_list], dim=0) for kind in activations.KINDS}


def paper_inputs(engine: Engine, answers: list[CollectedAnswer]) -> tuple[dict, dict]:
    """The paper's inputs: per side, the chat-templated prompt strings and the answers (its CSV columns)."""
    prompts = {side: [engine.chat_text(a.messages()) for a in answers if a.polarity == side] for side in ("pos", "neg")}
    responses = {side: [a.answer for a in answers if a.polarity == side] for side in ("pos", "neg")}
    return prompts, responses


def bare_plan(engine: Engine, answers: list[CollectedAnswer]) -> list[tuple[list[int], list[list[int]]]]:
    """The token work ours does: (prompt ids, [answer ids]) per shared prompt; (prefix ids, [rest ids]) per group of
    prompts sharing a prefix; (whole ids, []) for any other conversation."""
    encoded = [activations.encode(engine.tokenizer, engine.chat_text(a.messages()), a.answer) for a in answers]
    by_prompt: dict[tuple[int, ...], list[activations.Encoded]] = {}
    for e in encoded:
        by_prompt.setdefault(tuple(e.input_ids[:e.boundary]), []).append(e)
    plan = [(list(prompt), [e.input_ids[e.boundary:] for e in group])
            for prompt, group in by_prompt.items() if len(group) > 1]
    alone = [group[0] for group in by_prompt.values() if len(group) == 1]
    groups = activations.prefix_groups([e.input_ids[:e.boundary] for e in alone])
    for shared, members in groups:
        plan.append((alone[members[0]].input_ids[:shared], [alone[j].input_ids[shared:] for j in members]))
    grouped = {j for _, members in groups for j in members}
    return plan + [(e.input_ids, []) for j, e in enumerate(alone) if j not in grouped]


@torch.inference_mode()
def bare_forward(engine: Engine, plan: list[tuple[list[int], list[list[int]]]]) -> None:
    """The decoder body (no LM head), batch 1, over the plan's tokens; nothing pooled."""
    body, device = engine.model.model, engine.device
    for prompt, continuations in plan:
        ids = torch.tensor([prompt], device=device)
        if not continuations:
            body(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            continue
        cache = returned_cache(body(input_ids=ids, use_cache=True))
        for answer in continuations:
            row = torch.tensor([answer], device=device)
            continue_prompt(body, cache, len(prompt), row, torch.ones_like(row))


def agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Per kind, the lowest cosine over layers where the vectors are not zero, and the largest |a - b| anywhere."""
    out = {}
    for kind in activations.KINDS:
        x, y = a[kind].double(), b[kind].double()
        live = (x.norm(dim=-1) > 1e-6) & (y.norm(dim=-1) > 1e-6)
        out[f"{kind}_min_cosine"] = float(torch.nn.functional.cosine_similarity(x[live], y[live], dim=-1).min())
        out[f"{kind}_max_abs_diff"] = float((x - y).abs().max())
    return out


def rss_mb() -> float:
    """Resident memory now (not the process's lifetime peak, which model loading dominates)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_child(folder: str, n: int, epochs: int) -> None:
    engine = Engine.load(folder, dtype="float32")
    answers = samples(n, epochs)
    before = rss_mb()
    peak = [before]
    ours(engine, answers, progress=lambda _: peak.append(rss_mb()))
    print(json.dumps({"n": n, "peak_mb": max(peak), "growth_mb": max(peak) - before}))


def timed(fn, *args) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", default="1,2", help="torch threads to run each setting at, comma-separated")
    parser.add_argument("--epochs", default="10,1",
                        help="answers per question and instruction (the paper's n: 10; 1 = no shared prompts)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="dtypes for ours and bare (paper: float32)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--memory", action="store_true", help="also measure memory growth in fresh processes")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    folder = models.resolve(args.model)
    epochs_list = [int(e) for e in args.epochs.split(",")]
    if args.memory_child:
        memory_child(folder, args.memory_child, epochs_list[0])
        return

    torch.manual_seed(0)
    threads_list = [int(t) for t in args.threads.split(",")]
    dtypes = args.dtypes.split(",")
    engines = {d: Engine.load(folder, dtype=d) for d in dtypes}
    stock = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)  # from_pretrained: eval mode, grads on
    tokenizer = next(iter(engines.values())).tokenizer
    settings: dict[int, dict[str, Any]] = {}
    for epochs in epochs_list:
        answers = samples(args.samples, epochs)
        any_engine = next(iter(engines.values()))
        plan = bare_plan(any_engine, answers)
        tokens = sum(sum(len(p) + len(c) for c in cs) if cs else len(p) for p, cs in plan)
        run_tokens = sum(len(p) + sum(len(c) for c in cs) for p, cs in plan)
        settings[epochs] = {"answers": answers, "plan": plan, "paper": paper_inputs(any_engine, answers),
                            "tokens": tokens, "run_tokens": run_tokens}
        print(f"{args.samples} answers, {epochs} per prompt ({len(plan)} shared prompts, prefixes or wholes): "
              f"{tokens} conversation "
              f"tokens, {run_tokens} run by ours and bare", flush=True)

    checks = {}  # before any timing: are the contenders computing the same thing?
    for epochs, s in settings.items():
        paper_vec = paper_way(stock, tokenizer, *s["paper"])
        checks[epochs] = {d: agreement(ours(engine, s["answers"]), paper_vec) for d, engine in engines.items()}
        for d, check in checks[epochs].items():
            print(f"vectors, {epochs} per prompt, ours {d} vs paper float32: " + ", ".join(
                f"{k} {v:.7f}" if "cosine" in k else f"{k} {v:.1e}" for k, v in check.items()), flush=True)
    fp32_checks = [c["float32"] for c in checks.values() if "float32" in c]
    agree = all(v >= 1 - COSINE_TOLERANCE for c in fp32_checks for k, v in c.items() if "cosine" in k)
    if not agree:
        print(f"WARNING: ours and the paper's way disagree beyond cosine 1 - {COSINE_TOLERANCE} in float32", flush=True)

    contenders = [("paper", "float32")] + [(way, d) for d in dtypes for way in ("ours", "bare")]

    def run(way: str, dtype: str, s: dict) -> None:
        if way == "paper":
            paper_way(stock, tokenizer, *s["paper"])
        elif way == "ours":
            ours(engines[dtype], s["answers"])
        else:
            bare_forward(engines[dtype], s["plan"])

    for way, dtype in contenders:  # warm-up: thread pools, and oneDNN's kernels for every row count ours and bare meet
        for s in settings.values():
            run(way, dtype, s)

    rounds = []
    for r in range(args.rounds):
        result: dict[str, Any] = {}
        for threads in threads_list:
            torch.set_num_threads(threads)
            for epochs, s in settings.items():
                figures: dict[str, Any] = {}
                order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
                for way, dtype in order:
                    seconds, _ = timed(run, way, dtype, s)
                    figures[f"{way} {dtype}"] = {"seconds": round(seconds, 3),
                                                 "tokens_per_s": round(s["tokens"] / seconds, 1)}
                for key, (top, bottom) in RATIOS.items():
                    if top in figures and bottom in figures:
                        figures[key] = round(figures[bottom]["seconds"] / figures[top]["seconds"], 3)
                result[f"threads={threads} epochs={epochs}"] = figures
                print(f"round {r + 1} threads {threads}, {epochs} per prompt: " + "  ".join(
                    f"{n} {f['seconds']} s ({f['tokens_per_s']} tok/s)"
                    for n, f in figures.items() if isinstance(f, dict))
                    + "  " + "  ".join(f"{k} {v}" for k, v in figures.items() if not isinstance(v, dict)), flush=True)
        rounds.append(result)

    medians = {key: {n: statistics.median(r[key][n]["seconds"] if isinstance(v, dict) else r[key][n] for r in rounds)
                     for n, v in figures.items()} for key, figures in rounds[0].items()}
    summary: dict[str, Any] = {
        "model": args.model, "samples": args.samples, "rounds": args.rounds, "threads": threads_list,
        "epochs": epochs_list, "dtypes": dtypes, "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "tokens": {e: s["tokens"] for e, s in settings.items()},
        "run_tokens": {e: s["run_tokens"] for e, s in settings.items()},
        "vectors_agree": agree, "agreement": checks, "median": medians, "per_round": rounds,
    }
    print()
    for key, m in medians.items():
        print(f"{key}: medians over {args.rounds} rounds (seconds): "
              + ", ".join(f"{n} {v}" for n, v in m.items() if " " in n)
              + "; ratios: " + ", ".join(f"{n} {v}" for n, v in m.items() if " " not in n))
    print("targets (float32): ours_vs_paper >= 2 at 10 per prompt, >= 1.5 at 1 per prompt; ours_vs_bare >= 0.95")

    if args.memory:
        peaks = []
        for n in (args.samples // 2, args.samples * 2, args.samples * 4):
            out = subprocess.run([sys.executable, __file__, "--model", args.model, "--epochs", str(epochs_list[0]),
                                  "--memory-child", str(n)], capture_output=True, text=True, check=True)
            peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
        for p in peaks:
            print(f"resident memory, {p['n']:>4} answers: peak {p['peak_mb']:6.0f} MB, +{p['growth_mb']:4.0f} MB "
                  "pooling (target: flat as answers grow)")
        summary["memory"] = peaks
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
