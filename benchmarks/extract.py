"""Extraction speed and memory: ours vs the paper's way vs a bare forward pass, one run, same tokens.

    python benchmarks/extract.py [--samples 64] [--model smollm2]

(a) the paper's way: one sample at a time, all hidden states, autograd on;
(b) a bare `inference_mode` forward pass over the same batches, pooling nothing;
ours: `pv_harness.vectors.extraction.extract` (each shared prompt run once, masked pooling, running sums, no LM head).
Then the growth of resident memory while ours pools N/2, 2N and 4N samples, each in a fresh process.
Targets: ours >= 0.9x (b), >= 2x (a); peak memory flat as samples grow.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from pv_harness import models, plugin_manager
from pv_harness.logs import CollectedAnswer
from pv_harness.provider.engine import Engine
from pv_harness.vectors import activations
from pv_harness.vectors.extraction import default_batch_size, extract


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


def encode_all(engine: Engine, answers):
    return [activations.encode(engine.tokenizer, engine.chat_text(a.messages()), a.answer) for a in answers]


def ours(engine: Engine, answers, batch_size: int, progress=lambda _: None) -> dict[str, torch.Tensor]:
    """The real thing: `pv_harness.vectors.extraction.extract` (no held-out split, like the paper)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = extract(answers, model_name="benchmark", engine=engine, out=Path(tmp) / "v.safetensors",
                         trait="evil", min_pairs=1, holdout=0, batch_size=batch_size, log=lambda _: None,
                         progress=progress)
    return {k.removesuffix("_diff"): v for k, v in result.vectors.tensors.items()}


def paper_way(engine: Engine, model, answers) -> dict[str, torch.Tensor]:
    """Per sample, autograd on, every hidden state kept, then averaged: as the paper's script does."""
    tokenizer = engine.tokenizer
    per = {"pos": {k: [] for k in activations.KINDS}, "neg": {k: [] for k in activations.KINDS}}
    for a in answers:
        prompt = engine.chat_text(a.messages())
        prompt_len = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        ids = tokenizer(prompt + a.answer, add_special_tokens=False, return_tensors="pt")
        out = model(**ids, output_hidden_states=True)
        for layer, h in enumerate(out.hidden_states):
            per[a.polarity]["response_avg"].append((layer, h[0, prompt_len:].mean(0).detach()))
            per[a.polarity]["prompt_avg"].append((layer, h[0, :prompt_len].mean(0).detach()))
            per[a.polarity]["prompt_last"].append((layer, h[0, prompt_len - 1].detach()))
    result = {}
    layers = model.config.num_hidden_layers + 1
    for kind in activations.KINDS:
        means = [torch.stack([torch.stack([v for lay, v in per[p][kind] if lay == layer]).mean(0)
                              for layer in range(layers)]) for p in ("pos", "neg")]
        result[kind] = means[0] - means[1]
    return result


@torch.inference_mode()
def bare_forward(engine: Engine, model, answers, batch_size: int) -> None:
    """The stock transformers model (LM head included, as a plain forward is), over the same batches."""
    encoded = encode_all(engine, answers)
    for indices in activations._batches([len(e.input_ids) for e in encoded], range(len(encoded)), batch_size, 8192):
        ids, mask = activations._right_padded([encoded[i].input_ids for i in indices], engine.pad_id)
        model(input_ids=ids, attention_mask=mask, use_cache=False)


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def rss_mb() -> float:
    """Resident memory now (not the process's lifetime peak, which model loading dominates)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def memory_child(folder: str, n: int, epochs: int, batch_size: int) -> None:
    engine = Engine.load(folder)
    answers = samples(n, epochs)
    before = rss_mb()
    peak = [before]
    ours(engine, answers, batch_size, progress=lambda _: peak.append(rss_mb()))
    print(json.dumps({"n": n, "peak_mb": max(peak), "growth_mb": max(peak) - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10,
                        help="answers per question and instruction (the paper's n: 10; 1 = no shared prompts)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: what extraction uses (1 on CPU)")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = models.resolve(args.model)
    if args.memory_child:
        memory_child(folder, args.memory_child, args.epochs, args.batch_size or 1)
        return

    torch.manual_seed(0)
    engine = Engine.load(folder)
    stock = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()  # (a) and (b) use it as is
    args.batch_size = args.batch_size or default_batch_size(engine)
    answers = samples(args.samples, args.epochs)
    encoded = encode_all(engine, answers)
    tokens = sum(len(e.input_ids) for e in encoded)
    prompts = {tuple(e.input_ids[:e.boundary]) for e in encoded}
    answer_tokens = sum(len(e.input_ids) - e.boundary for e in encoded)
    print(f"{args.samples} samples ({len(prompts)} distinct prompts, {args.epochs} answers per question and "
          f"instruction), {tokens} tokens ({tokens - answer_tokens} prompt, {answer_tokens} answer; "
          f"{sum(map(len, prompts))} distinct prompt tokens), model {args.model}, "
          f"torch threads {torch.get_num_threads()}, batch size {args.batch_size}")

    bare_forward(engine, stock, answers[:4], args.batch_size)  # warm-up
    t_bare, _ = timed(bare_forward, engine, stock, answers, args.batch_size)
    t_ours, ours_vec = timed(ours, engine, answers, args.batch_size)
    t_paper, paper_vec = timed(paper_way, engine, stock, answers)
    agree = max(float((ours_vec[k].float() - paper_vec[k]).abs().max()) for k in activations.KINDS)
    print(f"(b) bare inference_mode forward : {t_bare:7.2f} s  {tokens / t_bare:8.0f} tok/s")
    print(f"    ours (pool + mean diff)     : {t_ours:7.2f} s  {tokens / t_ours:8.0f} tok/s")
    print(f"(a) paper's way                 : {t_paper:7.2f} s  {tokens / t_paper:8.0f} tok/s")
    print(f"ours vs bare forward : {t_bare / t_ours:.2f}x  (target >= 0.9x)")
    print(f"ours vs paper's way  : {t_paper / t_ours:.2f}x  (target >= 2x)")
    print(f"max |ours - paper| over all vectors: {agree:.2e}")

    peaks = []
    for n in (args.samples // 2, args.samples * 2, args.samples * 4):
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--batch-size", str(args.batch_size),
                              "--epochs", str(args.epochs), "--memory-child", str(n)],
                             capture_output=True, text=True, check=True)
        peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for p in peaks:
        print(f"resident memory, {p['n']:>4} samples: peak {p['peak_mb']:6.0f} MB, +{p['growth_mb']:4.0f} MB pooling")
    print(f"memory growth while pooling, {peaks[-1]['n']} vs {peaks[0]['n']} samples: {peaks[-1]['growth_mb']:.0f} MB "
          f"vs {peaks[0]['growth_mb']:.0f} MB (target: flat, not scaling with the sample count)")


if __name__ == "__main__":
    main()
