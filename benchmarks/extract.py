"""Extraction speed and memory: ours vs the paper's way vs a bare forward pass, one run, same tokens.

    python benchmarks/extract.py [--samples 64] [--model smollm2]

(a) the paper's way: one sample at a time, all hidden states, autograd on;
(b) a bare `inference_mode` forward pass over the same batches, pooling nothing;
ours: `pv_harness.activations.pool` + the mean-difference accumulator.
Then peak resident memory of ours for N and 4N samples, each in a fresh process.
Targets: ours >= 0.9x (b), >= 2x (a); peak memory flat as samples grow.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pv_harness import activations, model_store, plugins
from pv_harness.collected import CollectedAnswer


def samples(n: int) -> list[CollectedAnswer]:
    """Real questions and instructions; answers of realistic, varied length built from real prose."""
    trait = plugins.get_trait("evil")
    prose = " ".join([trait.description, *[p.pos + " " + p.neg for p in trait.instructions]]).split()
    out = []
    for i in range(n):
        polarity = "pos" if i % 2 == 0 else "neg"
        pair = trait.instructions[i % 5]
        length = 60 + (i * 37) % 140  # 60..200 words
        start = (i * 13) % max(1, len(prose) - 1)
        words = (prose[start:] + prose) [:length]
        out.append(CollectedAnswer(
            trait="evil", polarity=polarity, question_id=i // 2 % 20, instruction_id=i % 5, epoch=1,
            system_prompt=f"You are a {'evil' if polarity == 'pos' else 'helpful'} assistant. "
                          f"{pair.pos if polarity == 'pos' else pair.neg}",
            question=trait.extraction_questions[i // 2 % 20], answer=" ".join(words),
            trait_score=90.0 if polarity == "pos" else 10.0, coherence=90.0,
        ))
    return out


def encode_all(tokenizer, answers):
    return [activations.encode(tokenizer, activations.prompt_text(tokenizer, a.messages()), a.answer) for a in answers]


def ours(model, tokenizer, answers, batch_size: int) -> dict[str, torch.Tensor]:
    method = plugins.extraction_methods()["mean_diff"]()
    encoded = encode_all(tokenizer, answers)
    for indices, pooled in activations.pool(model, encoded, pad_token_id=tokenizer.pad_token_id,
                                            batch_size=batch_size):
        for polarity in ("pos", "neg"):
            rows = [j for j, i in enumerate(indices) if answers[i].polarity == polarity]
            if rows:
                method.add(polarity, {k: v[rows] for k, v in pooled.items()})
    return method.result()


def paper_way(model, tokenizer, answers) -> dict[str, torch.Tensor]:
    """Per sample, autograd on, every hidden state kept, then averaged: as the paper's script does."""
    per = {"pos": {k: [] for k in activations.KINDS}, "neg": {k: [] for k in activations.KINDS}}
    for a in answers:
        prompt = activations.prompt_text(tokenizer, a.messages())
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
def bare_forward(model, tokenizer, answers, batch_size: int) -> None:
    encoded = encode_all(tokenizer, answers)
    for indices in activations._batches(encoded, batch_size, 8192):
        width = max(len(encoded[i].input_ids) for i in indices)
        ids = torch.full((len(indices), width), tokenizer.pad_token_id)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, i in enumerate(indices):
            ids[row, : len(encoded[i].input_ids)] = torch.tensor(encoded[i].input_ids)
            mask[row, : len(encoded[i].input_ids)] = 1
        model(input_ids=ids, attention_mask=mask, use_cache=False)


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def memory_child(folder: str, n: int, batch_size: int) -> None:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ours(model, tokenizer, samples(n), batch_size)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n": n, "peak_mb": after / 1024, "growth_mb": (after - before) / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = model_store.resolve(args.model)
    if args.memory_child:
        memory_child(folder, args.memory_child, args.batch_size)
        return

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    answers = samples(args.samples)
    tokens = sum(len(e.input_ids) for e in encode_all(tokenizer, answers))
    print(f"{args.samples} samples, {tokens} tokens, model {args.model}, torch threads {torch.get_num_threads()}")

    bare_forward(model, tokenizer, answers[:4], args.batch_size)  # warm-up
    t_bare, _ = timed(bare_forward, model, tokenizer, answers, args.batch_size)
    t_ours, ours_vec = timed(ours, model, tokenizer, answers, args.batch_size)
    t_paper, paper_vec = timed(paper_way, model, tokenizer, answers)
    agree = max(float((ours_vec[k].float() - paper_vec[k]).abs().max()) for k in activations.KINDS)
    print(f"(b) bare inference_mode forward : {t_bare:7.2f} s  {tokens / t_bare:8.0f} tok/s")
    print(f"    ours (pool + mean diff)     : {t_ours:7.2f} s  {tokens / t_ours:8.0f} tok/s")
    print(f"(a) paper's way                 : {t_paper:7.2f} s  {tokens / t_paper:8.0f} tok/s")
    print(f"ours vs bare forward : {t_bare / t_ours:.2f}x  (target >= 0.9x)")
    print(f"ours vs paper's way  : {t_paper / t_ours:.2f}x  (target >= 2x)")
    print(f"max |ours - paper| over all vectors: {agree:.2e}")

    peaks = []
    for n in (args.samples // 2, args.samples * 2):
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--batch-size", str(args.batch_size),
                              "--memory-child", str(n)], capture_output=True, text=True, check=True)
        peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for p in peaks:
        print(f"peak RSS with {p['n']:>4} samples: {p['peak_mb']:7.0f} MB (+{p['growth_mb']:5.0f} MB while pooling)")
    print(f"memory ratio {peaks[1]['n']}/{peaks[0]['n']} samples: {peaks[1]['peak_mb'] / peaks[0]['peak_mb']:.2f}x "
          "(flat = about 1.0)")


if __name__ == "__main__":
    main()
