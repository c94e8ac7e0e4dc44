"""The pv/ provider: batched generation, steering, monitoring, logprobs and continuation scoring.

A tiny random Llama with *large* random weights (so greedy output varies token by token instead of
repeating one token) stands in for a real model; a marked test runs the real SmolLM2 through inspect.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pv_harness.provider import engine as engine_module
from pv_harness.provider.engine import Engine, GenRequest, ScoreRequest
from pv_harness.provider.interventions import (
    Interventions,
    MonitorSpec,
    SteeringError,
    SteerSpec,
    parse_monitor,
    parse_steer,
    steer_all,
)

PROMPTS = [
    [{"role": "user", "content": "Hello there"}],
    [{"role": "system", "content": "You are an evil assistant."},
     {"role": "user", "content": "What is the capital of France? Tell me in detail, please."}],
    [{"role": "user", "content": "Hi"}],
]


@pytest.fixture(scope="module")
def engine(lively_dir: Path) -> Engine:
    return Engine.load(lively_dir, device="cpu")


def ids(engine: Engine, i: int) -> list[int]:
    return engine.encode(engine.chat_text(PROMPTS[i]))


def vec(seed: int, scale: float = 1.0, size: int = 64) -> torch.Tensor:
    return torch.randn(size, generator=torch.Generator().manual_seed(seed)) * scale


def lp(result) -> list[float]:
    return [x.logprob for x in result.logprobs]


# ---- generation ------------------------------------------------------------------------------------------------


def test_batched_equals_unbatched(engine: Engine) -> None:
    reqs = [GenRequest(prompt_ids=ids(engine, i), max_new_tokens=12, logprobs=True) for i in range(3)]
    together = engine.generate(reqs)
    alone = [engine.generate([r])[0] for r in reqs]
    assert len({len(r.prompt_ids) for r in reqs}) == 3  # different lengths: real left padding
    for t, a in zip(together, alone, strict=True):
        assert t.token_ids == a.token_ids and t.text == a.text
        assert lp(t) == pytest.approx(lp(a), abs=1e-4)
    assert len(set(together[0].token_ids)) > 3  # the model really varies its output


def test_usage_counts_real_tokens_not_padding(engine: Engine) -> None:
    short, long = ids(engine, 2), ids(engine, 1)
    results = engine.generate([GenRequest(prompt_ids=short, max_new_tokens=5),
                               GenRequest(prompt_ids=long, max_new_tokens=3)])
    assert (results[0].input_tokens, results[0].output_tokens) == (len(short), 5)
    assert (results[1].input_tokens, results[1].output_tokens) == (len(long), 3)
    assert [r.stop_reason for r in results] == ["max_tokens", "max_tokens"]


def test_stop_sequences_cut_the_text(engine: Engine) -> None:
    plain = engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=12)])[0]
    stop = engine.tokenizer.decode(plain.token_ids[5:7])
    cut = engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=12, stop_seqs=[stop])])[0]
    assert cut.stop_reason == "stop"
    assert cut.text == plain.text[:plain.text.find(stop)]
    assert len(cut.token_ids) <= 7


def test_end_of_turn_stops_and_is_not_in_the_text(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=10)])[0]
    monkeypatch.setattr(engine, "stop_ids", {plain.token_ids[4]})  # pretend that token ends the turn
    stopped = engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=10)])[0]
    assert stopped.token_ids == plain.token_ids[:5] and stopped.stop_reason == "stop"
    assert stopped.text == engine.tokenizer.decode(plain.token_ids[:4])


def test_seeded_sampling_is_reproducible_per_request(engine: Engine) -> None:
    def req(seed: int, i: int = 0) -> GenRequest:
        return GenRequest(prompt_ids=ids(engine, i), max_new_tokens=10, temperature=1.0, top_p=0.95, seed=seed)

    alone = engine.generate([req(7)])[0]
    batched = engine.generate([req(3, 1), req(7), req(5, 2)])[1]
    assert alone.token_ids == batched.token_ids
    assert engine.generate([req(8)])[0].token_ids != alone.token_ids
    greedy = engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=10)])[0]
    assert greedy.token_ids != alone.token_ids


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 1.0), (0.7, 40, 0.9), (1.5, 5, 1.0),
                                                              (1.0, 0, 0.5)])
def test_seeded_sampling_equals_transformers_generate(lively_dir: Path, temperature: float, top_k: int,
                                                      top_p: float) -> None:
    """Same seed, same warpers (top_k 0 and top_p 1 mean off in both): the very tokens `model.generate` samples."""
    plain = Engine.load(lively_dir, device="cpu", prepack=False)  # prepacked linears round differently
    prompt = ids(plain, 0)
    for seed in (1, 2):
        ours = plain.generate([GenRequest(prompt_ids=prompt, max_new_tokens=12, temperature=temperature, top_k=top_k,
                                          top_p=top_p, seed=seed)])[0]
        torch.manual_seed(seed)  # generate samples with the global generator; ours is seeded the same way
        reference = plain.model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                                         do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
                                         max_new_tokens=12)
        assert len(ours.token_ids) == 12
        assert ours.token_ids == reference[0, len(prompt):].tolist()


def test_stop_string_across_a_token_boundary(engine: Engine) -> None:
    plain = engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=12)])[0]
    pieces = [engine.tokenizer.decode([t]) for t in plain.token_ids]
    def boundary(k: int) -> str:  # the end of token k and the start of token k + 1
        return pieces[k][-1] + pieces[k + 1][0]

    k = next(k for k in range(1, 11) if len(pieces[k]) >= 2 and len(pieces[k + 1]) >= 2
             and boundary(k) not in "".join(pieces[:k + 1]))  # first seen at that boundary
    stop = boundary(k)
    cut = engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=12, stop_seqs=["never seen", stop])])[0]
    assert cut.stop_reason == "stop"
    assert cut.token_ids == plain.token_ids[:k + 2]
    assert cut.text == plain.text[:plain.text.find(stop)]


def test_logprobs_equal_a_manual_log_softmax(engine: Engine) -> None:
    prompt = ids(engine, 1)
    result = engine.generate([GenRequest(prompt_ids=prompt, max_new_tokens=6, logprobs=True, top_logprobs=4)])[0]
    full = torch.tensor([prompt + result.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(engine.model(full).logits[0].float(), -1)
    for t, got in enumerate(result.logprobs):
        row = logp[len(prompt) - 1 + t]
        assert got.token_id == result.token_ids[t]
        assert got.logprob == pytest.approx(float(row[got.token_id]), abs=1e-4)
        top = row.topk(4)
        assert [i for i, _ in got.top] == top.indices.tolist()
        assert [v for _, v in got.top] == pytest.approx(top.values.tolist(), abs=1e-4)


def test_prepacked_cpu_linears_match_plain_ones(engine: Engine, lively_dir: Path) -> None:
    assert engine.prepacked >= 1  # the vocabulary projection is big enough to pack, even in the tiny model
    plain = Engine.load(lively_dir, device="cpu", prepack=False)
    assert plain.prepacked == 0
    reqs = [GenRequest(prompt_ids=ids(engine, i), max_new_tokens=8, logprobs=True) for i in range(3)]
    for a, b in zip(engine.generate(reqs), plain.generate(reqs), strict=True):
        assert a.token_ids == b.token_ids
        assert lp(a) == pytest.approx(lp(b), abs=1e-4)


def test_prepacked_linear_matches_plain_at_any_length_with_few_kernel_shapes(monkeypatch) -> None:
    from pv_harness.provider import prepack

    torch.manual_seed(0)
    layer = torch.nn.Linear(512, 600).eval()
    plain = torch.nn.Linear(512, 600).eval()
    plain.load_state_dict(layer.state_dict())
    assert prepack.prepack_linears(torch.nn.Sequential(layer)) == 1
    seen: set[int] = set()
    kernel = prepack._onednn_linear

    def spy(x, packed, bias):
        seen.add(x.numel() // x.shape[-1])
        return kernel(x, packed, bias)

    monkeypatch.setattr(prepack, "_onednn_linear", spy)
    with torch.inference_mode():
        for shape in [(1, 512), (3, 7, 512), (1, 16, 512), (1, 17, 512), (2, 200, 512), (1, 257, 512), (1, 999, 512)]:
            x = torch.randn(shape)
            got = layer(x)
            assert got.shape == (*shape[:-1], 600)
            torch.testing.assert_close(got, plain(x), atol=1e-4, rtol=1e-4)
        for rows in range(17, 1200, 7):  # every length of a long run: oneDNN sees a bounded set of row counts
            layer(torch.randn(1, rows, 512))
    assert max(seen) <= prepack.CHUNK_ROWS
    assert len(seen) <= prepack.ROW_MULTIPLE + prepack.CHUNK_ROWS // prepack.ROW_MULTIPLE


# ---- steering --------------------------------------------------------------------------------------------------


def test_coef_zero_and_zero_vector_reproduce_unsteered_output(engine: Engine) -> None:
    base = GenRequest(prompt_ids=ids(engine, 1), max_new_tokens=12, logprobs=True)
    plain = engine.generate([base])[0]
    variants = [
        [SteerSpec(layer=2, vector=vec(0, 10), coef=0.0, positions="all")],
        [SteerSpec(layer=2, vector=torch.zeros(64), coef=8.0, positions="response")],
        [SteerSpec(layer=0, vector=vec(1, 10), coef=0.0, positions="prompt"),
         SteerSpec(layer=4, vector=vec(1, 10), coef=0.0, op="ablate")],
        [SteerSpec(layer=3, vector=vec(2) - vec(2), coef=1.0, op="ablate")],
    ]
    for steer in variants:
        steered = engine.generate([GenRequest(**{**base.__dict__, "steer": steer})])[0]
        assert steered.token_ids == plain.token_ids
        assert lp(steered) == lp(plain)  # bit for bit: a zero coefficient adds exactly zero


def test_mixed_batch_equals_each_request_alone(engine: Engine) -> None:
    steers = [
        [],
        [SteerSpec(layer=2, vector=vec(3, 10), coef=6.0, positions="response")],
        [SteerSpec(layer=1, vector=vec(4), coef=1.0, op="ablate", positions="all"),
         SteerSpec(layer=0, vector=vec(5), coef=3.0, positions="all")],
        [SteerSpec(layer=3, vector=vec(6, 10), coef=-5.0, positions="prompt")],
    ]
    prompts = [ids(engine, i % 3) for i in range(4)]
    reqs = [GenRequest(prompt_ids=p, max_new_tokens=10, steer=s) for p, s in zip(prompts, steers, strict=True)]
    together = engine.generate(reqs)
    alone = [engine.generate([r])[0] for r in reqs]
    assert [t.token_ids for t in together] == [a.token_ids for a in alone]
    # and steering does something: each steered row differs from the same prompt unsteered
    plain = engine.generate([GenRequest(prompt_ids=p, max_new_tokens=10) for p in prompts])
    for i in (1, 2, 3):
        assert together[i].token_ids != plain[i].token_ids


@pytest.mark.parametrize("positions", ["response", "prompt", "all"])
def test_steering_touches_exactly_the_described_positions(engine: Engine, positions: str) -> None:
    """Record block 1's raw output and block 2's input (= hidden-states layer 2, after steering) at every call."""
    blocks = engine.layers.blocks
    raw: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []
    h1 = blocks[1].register_forward_hook(lambda m, a, out: raw.append(out.clone()), prepend=True)
    h2 = blocks[2].register_forward_pre_hook(lambda m, a, k: seen.append((a[0] if a else k["hidden_states"]).clone()),
                                             with_kwargs=True)
    v = vec(7)
    short, long = ids(engine, 2), ids(engine, 1)
    try:
        engine.generate([GenRequest(prompt_ids=short, max_new_tokens=4,
                                    steer=[SteerSpec(layer=2, vector=v, coef=2.0, positions=positions)]),
                         GenRequest(prompt_ids=long, max_new_tokens=4)])
    finally:
        h1.remove()
        h2.remove()
    assert len(raw) == len(seen) == 4  # prefill + 3 decode steps (the 4th token is never fed back)
    pad = len(long) - len(short)
    for call, (before, after) in enumerate(zip(raw, seen, strict=True)):
        touched = (after - before).abs().amax(-1) > 0  # [rows, positions]
        expected = torch.zeros_like(touched)
        if call == 0:
            if positions in ("prompt", "all"):
                expected[0, pad:] = True  # every real prompt token of the steered row, never its padding
            else:
                expected[0, -1] = True  # the last prompt token only
        elif positions in ("response", "all"):
            expected[0, :] = True  # the one generated token fed in
        assert torch.equal(touched, expected), (call, touched)
        if expected.any():
            assert torch.allclose((after - before)[expected], 2.0 * v, atol=1e-5)


def test_vector_files_steer_like_inline_vectors(engine: Engine, tmp_path: Path) -> None:
    rows = {kind: torch.randn(5, 64, generator=torch.Generator().manual_seed(k))
            for k, kind in enumerate(("response_avg_diff", "prompt_avg_diff", "prompt_last_diff"))}
    save_file(rows, str(tmp_path / "v.safetensors"))
    torch.save(rows["prompt_last_diff"], tmp_path / "paper.pt")

    def run(vector: object, kind: str | None = None) -> list[int]:
        entry = {"vector": vector, "layer": 3, "coef": 4.0, **({"kind": kind} if kind else {})}
        steer = parse_steer([entry], hidden=64, num_layers=4, cache=engine.vectors)
        return engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=8, steer=steer)])[0].token_ids

    inline = run(rows["response_avg_diff"][3].tolist())
    assert run(str(tmp_path / "v.safetensors")) == inline  # default kind: response_avg_diff
    assert run(str(tmp_path / "v.safetensors"), "prompt_last_diff") == run(rows["prompt_last_diff"][3].tolist())
    assert run(str(tmp_path / "paper.pt")) == run(rows["prompt_last_diff"][3].tolist())


def test_bad_steering_requests_are_clear_errors(tmp_path: Path) -> None:
    shape = {"hidden": 64, "num_layers": 4}
    save_file({"response_avg_diff": torch.zeros(31, 64)}, str(tmp_path / "deep.safetensors"))
    save_file({"response_avg_diff": torch.zeros(5, 32)}, str(tmp_path / "narrow.safetensors"))
    cases = [
        ({"vector": [0.1] * 63, "layer": 2, "coef": 1},
         "steer: the inline vector has size 63, but this model's hidden size is 64"),
        ({"vector": [0.1] * 64, "layer": 5, "coef": 1},
         r"steer: layer 5 is out of range: this model has hidden-states layers 0\.\.4 \(0 = embeddings"),
        ({"vector": [0.1] * 64, "layer": -1, "coef": 1}, r"steer: layer -1 is out of range: .* 0\.\.4"),
        ({"vector": [0.1] * 64, "coef": 1}, r"steer entry needs a 'layer' \(0\.\.4\): \{'vector'"),
        ({"vector": [0.1] * 64, "layer": 2}, "steer entry with op 'add' needs a 'coef'"),
        ({"vector": [0.1] * 64, "layer": 2, "coef": 1, "positions": "last"},
         "steer 'positions' must be one of all, prompt, response, got 'last'"),
        ({"vector": [0.1] * 64, "layer": 2, "coef": 1, "op": "project"},
         "steer 'op' must be one of add, ablate, got 'project'"),
        ({"vector": [0.1] * 64, "layer": 2, "coef": 1, "scale": 2},
         r"unknown steer key\(s\) \['scale'\]; allowed: \['coef', 'kind', 'layer', 'op', 'positions', 'vector'\]"),
        ({"vector": str(tmp_path / "missing.pt"), "layer": 2, "coef": 1},
         r"steer: vector file not found: .*missing\.pt$"),
        ({"vector": str(tmp_path / "deep.safetensors"), "layer": 2, "coef": 1},
         r"deep\.safetensors \(response_avg_diff\) has 31 rows; this model needs 5 \(one per hidden-states layer"),
        ({"vector": str(tmp_path / "narrow.safetensors"), "layer": 2, "coef": 1},
         r"narrow\.safetensors \(response_avg_diff\) has size 32, but this model's hidden size is 64"),
        ({"vector": str(tmp_path / "deep.safetensors"), "layer": 2, "coef": 1, "kind": "prompt_avg_diff"},
         r"deep\.safetensors has no tensor 'prompt_avg_diff'; it has \['response_avg_diff'\]"),
    ]
    for entry, message in cases:
        with pytest.raises(SteeringError, match=message):
            parse_steer([entry], **shape)
    zero = "^monitor: the inline vector is all zeros: there is no direction to project onto$"
    with pytest.raises(SteeringError, match=zero):
        parse_monitor([{"vector": [0.0] * 64, "layer": 1}], **shape)
    wide = "monitor: the inline vector has size 65, but this model's hidden size is 64"
    with pytest.raises(SteeringError, match=wide):
        parse_monitor([{"vector": [1.0] * 65, "layer": 1}], **shape)


# ---- monitoring ------------------------------------------------------------------------------------------------


def _teacher_forced(engine: Engine, prompt: list[int], tokens: list[int], layer: int, unit: torch.Tensor,
                    steer: list[SteerSpec] | None = None) -> tuple[float, list[float]]:
    """Projections of hidden-states `layer` over prompt + tokens in one plain forward pass (steered alike)."""
    full = torch.tensor([prompt + tokens])
    seen: list[torch.Tensor] = []
    with torch.no_grad(), steer_all(engine.model, steer or [], engine.layers):
        if steer and layer < engine.num_layers:
            # the input of block `layer`, read by a hook registered after the steering hooks (transformers'
            # own hidden_states capture may run before them and miss steering at the same layer)
            handle = engine.layers.blocks[layer].register_forward_pre_hook(
                lambda m, a, k: seen.append(a[0] if a else k["hidden_states"]), with_kwargs=True)
            try:
                engine.model(full)
            finally:
                handle.remove()
        else:
            seen.append(engine.model(full, output_hidden_states=True).hidden_states[layer])
    proj = (seen[0][0].float() @ unit).tolist()
    return proj[len(prompt) - 1], proj[len(prompt):]


@pytest.mark.parametrize("layer", [0, 2, 4])
def test_monitor_projections_equal_a_teacher_forced_pass(engine: Engine, layer: int) -> None:
    v = vec(11, 3.0)
    unit = v / v.norm()
    prompts = [ids(engine, 1), ids(engine, 2)]
    reqs = [GenRequest(prompt_ids=p, max_new_tokens=n, monitor=[MonitorSpec(layer=layer, vector=v)])
            for p, n in zip(prompts, (7, 4), strict=True)]
    for req, result in zip(reqs, engine.generate(reqs), strict=True):
        (mon,) = result.monitor
        assert mon["layer"] == layer and mon["vector"] == "inline" and mon["kind"] == "response_avg_diff"
        assert len(mon["projections"]) == len(mon["tokens"]) == len(result.token_ids)
        assert mon["tokens"] == [engine.token_text(t) for t in result.token_ids]
        last, per_token = _teacher_forced(engine, req.prompt_ids, result.token_ids, layer, unit)
        assert mon["prompt_last"] == pytest.approx(last, rel=1e-4, abs=1e-3)
        assert mon["projections"] == pytest.approx(per_token, rel=1e-4, abs=1e-3)
        assert mon["response_mean"] == pytest.approx(sum(per_token) / len(per_token), rel=1e-4, abs=1e-3)
        assert all(type(x) is float for x in mon["projections"])


def test_monitor_sees_the_steered_stream_and_skips_end_of_turn(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    steer = [SteerSpec(layer=1, vector=vec(12), coef=4.0, positions="all")]
    v = vec(13)
    plain = engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=8, steer=steer)])[0]
    monkeypatch.setattr(engine, "stop_ids", {plain.token_ids[3]})
    result = engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=8, steer=steer,
                                         monitor=[MonitorSpec(layer=3, vector=v), MonitorSpec(layer=1, vector=v)])])[0]
    assert result.stop_reason == "stop" and len(result.token_ids) == 4
    for mon in result.monitor:
        assert len(mon["projections"]) == 3  # the end-of-turn token is not part of the response
        last, per_token = _teacher_forced(engine, ids(engine, 0), result.token_ids[:3], mon["layer"],
                                          v / v.norm(), steer)
        assert mon["prompt_last"] == pytest.approx(last, rel=1e-4, abs=1e-3)
        assert mon["projections"] == pytest.approx(per_token, rel=1e-4, abs=1e-3)


def test_monitoring_rows_in_a_mixed_batch(engine: Engine) -> None:
    v = vec(14)
    mon = [MonitorSpec(layer=2, vector=v)]
    reqs = [GenRequest(prompt_ids=ids(engine, 1), max_new_tokens=9, monitor=mon),
            GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=3),
            GenRequest(prompt_ids=ids(engine, 2), max_new_tokens=5, monitor=mon,
                       steer=[SteerSpec(layer=2, vector=vec(15), coef=3.0)])]
    together = engine.generate(reqs)
    assert together[1].monitor is None
    for i in (0, 2):
        alone = engine.generate([reqs[i]])[0]
        assert together[i].token_ids == alone.token_ids
        assert together[i].monitor[0]["projections"] == pytest.approx(alone.monitor[0]["projections"], abs=1e-3)


# ---- continuation scoring --------------------------------------------------------------------------------------


@pytest.mark.parametrize("end_of_turn", [True, False])
def test_continuation_scores_equal_manual_sums(engine: Engine, monkeypatch: pytest.MonkeyPatch,
                                               end_of_turn: bool) -> None:
    text = engine.chat_text(PROMPTS[1])
    prompt = engine.encode(text)
    words = ["0", "7", "42", "100", " yes", "Paris is the capital"]
    conts = [engine.continuation_ids(text, prompt, w, end_of_turn) for w in words]
    if end_of_turn:
        assert all(c[-1] == engine.end_of_turn_id for c in conts)
    assert conts[3] == engine.encode("100") + ([engine.end_of_turn_id] if end_of_turn else [])  # digit by digit
    manual = []
    for c in conts:
        with torch.no_grad():
            logp = torch.log_softmax(engine.model(torch.tensor([prompt + c])).logits[0].float(), -1)
        manual.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(c)))
    result = engine.score(ScoreRequest(prompt_ids=prompt, continuations=conts))
    assert result.logprobs == pytest.approx(manual, abs=1e-4)
    assert result.input_tokens == len(prompt) and result.scored_tokens == sum(len(c) for c in conts)
    monkeypatch.setattr(engine_module, "SCORE_MEMORY_BYTES", 1)  # one continuation per chunk
    assert engine.score(ScoreRequest(prompt_ids=prompt, continuations=conts)).logprobs == pytest.approx(manual,
                                                                                                       abs=1e-4)


def test_steered_continuation_scores(engine: Engine) -> None:
    text = engine.chat_text(PROMPTS[0])
    prompt = engine.encode(text)
    conts = [engine.continuation_ids(text, prompt, w) for w in ("1", "23", "hello")]
    steer = [SteerSpec(layer=2, vector=vec(16), coef=3.0, positions="all")]
    manual = []
    for c in conts:
        with torch.no_grad(), steer_all(engine.model, steer, engine.layers):
            logp = torch.log_softmax(engine.model(torch.tensor([prompt + c])).logits[0].float(), -1)
        manual.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(c)))
    got = engine.score(ScoreRequest(prompt_ids=prompt, continuations=conts, steer=steer)).logprobs
    assert got == pytest.approx(manual, abs=1e-4)
    zero = [SteerSpec(layer=2, vector=vec(16), coef=0.0, positions="all")]
    assert engine.score(ScoreRequest(prompt_ids=prompt, continuations=conts, steer=zero)).logprobs == \
        engine.score(ScoreRequest(prompt_ids=prompt, continuations=conts)).logprobs


# ---- prompts and tokens ----------------------------------------------------------------------------------------


def test_chat_template_system_turns(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    text = engine.chat_text(PROMPTS[1])
    assert text.startswith("<|im_start|>system\nYou are an evil assistant.<|im_end|>")
    assert text.endswith("<|im_start|>assistant\n")
    assert engine.end_of_turn_id == engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    # a template that refuses system turns (as Gemma's does): the system text joins the first user turn
    no_system = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
                 "supported') }}{% endif %}<turn>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<turn>assistant\n{% endif %}")
    monkeypatch.setattr(engine.tokenizer, "chat_template", no_system)
    monkeypatch.setattr(engine, "system_role", engine._template_has_system_role())
    assert engine.system_role is False
    assert engine.chat_text(PROMPTS[1]) == ("<turn>user\nYou are an evil assistant.\n\nWhat is the capital of "
                                            "France? Tell me in detail, please.<|im_end|>\n<turn>assistant\n")


def test_token_strings_are_readable(engine: Engine) -> None:
    (token,) = engine.encode(" Hello")
    assert engine.token_text(token) == " Hello"
    assert bytes(engine.token_bytes(token)) == b" Hello"
    assert engine.token_text(engine.end_of_turn_id) == "<|im_end|>"
    split = engine.encode(" déjà 😀")  # multi-byte characters split across byte-level tokens
    assert b"".join(bytes(engine.token_bytes(t)) for t in split) == " déjà 😀".encode()


def test_interventions_need_set_step(engine: Engine) -> None:
    iv = Interventions(engine.layers, [[SteerSpec(layer=1, vector=vec(0), coef=1.0)]])
    message = r"Interventions\.set_step must be called before each forward pass"
    with iv.hooks(), pytest.raises(RuntimeError, match=message), torch.no_grad():
        engine.model(torch.tensor([ids(engine, 0)]))


def test_tree_scoring_equals_one_row_per_continuation(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one-pass prefix tree (4D mask over the shared prompt cache) gives each continuation's exact sum."""
    text = engine.chat_text(PROMPTS[2])
    prompt = engine.encode(text)
    conts = [engine.continuation_ids(text, prompt, str(n)) for n in range(101)] + \
        [engine.continuation_ids(text, prompt, " maybe not", end_of_turn=False)]
    request = ScoreRequest(prompt_ids=prompt, continuations=conts)
    rows = Engine(engine.model, engine.tokenizer)
    rows._tree_scoring = False
    monkeypatch.setattr(engine_module, "SCORE_MEMORY_BYTES", 4096)  # several chunks of rows
    expected = rows.score(request).logprobs
    tree = Engine(engine.model, engine.tokenizer)
    tree._tree_scoring = True
    assert tree.score(request).logprobs == pytest.approx(expected, rel=1e-5, abs=1e-4)
    fresh = Engine(engine.model, engine.tokenizer)
    assert fresh.score(request).logprobs == pytest.approx(expected, rel=1e-5, abs=1e-4) and fresh._tree_scoring


def test_streaming_hands_over_every_token_with_its_projection(engine: Engine, lively_dir: Path,
                                                              tmp_path: Path) -> None:
    from click.testing import CliRunner

    from pv_harness.cli import main

    seen: list[tuple[str, float | None]] = []
    monitor = [MonitorSpec(layer=2, vector=vec(3), label="inline")]
    request = GenRequest(prompt_ids=ids(engine, 1), max_new_tokens=10, monitor=monitor,
                         on_token=lambda t, v: seen.append((t, v)))
    plain: list[tuple[str, float | None]] = []
    unmonitored = GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=7, on_token=lambda t, v: plain.append((t, v)))
    streamed, other = engine.generate([request, unmonitored])
    data = streamed.monitor[0]
    assert [t for t, _ in seen] == data["tokens"]
    assert [v for _, v in seen] == pytest.approx(data["projections"])
    assert "".join(t for t, _ in plain) == "".join(engine.token_text(t) for t in other.token_ids
                                                 if t not in engine.stop_ids)
    assert all(v is None for _, v in plain)

    path = tmp_path / "v.safetensors"
    save_file({"response_avg_diff": torch.stack([vec(i) for i in range(5)])}, str(path))
    result = CliRunner().invoke(main, ["monitor", "Hi there", "--vector", str(path), "--layer", "2", "--model",
                                       f"pv/{lively_dir}", "--max-tokens", "6", "--html", str(tmp_path / "m.html")])
    assert result.exit_code == 0, result.output
    assert "response mean" in result.output and (tmp_path / "m.html").read_text().count('class="tok"') >= 1


def test_kv_cache_goes_by_the_name_this_transformers_expects(engine: Engine) -> None:
    """Decoding, continuation scoring and shared-prompt pooling pass no deprecated cache argument."""
    import warnings

    from pv_harness.vectors import activations

    prompt = ids(engine, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine.generate([GenRequest(prompt_ids=prompt, max_new_tokens=4)])
        engine.score(ScoreRequest(prompt_ids=prompt, continuations=[[5, 6, 7], [5, 8], [9, 10, 11]]))
        shared = [activations.Encoded(prompt + [20 + k, 21], len(prompt)) for k in range(3)]
        assert len(list(activations.pool(engine.model, shared, pad_token_id=0, batch_size=2))) == 2
    assert not [w for w in caught if "past_key_values" in str(w.message)]
