"""Continuous batching: a finished row's slot goes at once to a waiting request, and every request's output is
what it gets alone (tokens, text, stop reason, logprobs, monitor values), with the KV cache bounded by the slots."""

from __future__ import annotations

from pathlib import Path

import pytest
from inspect_ai import Task, eval, task
from inspect_ai.dataset import Sample
from inspect_ai.model import GenerateConfig, get_model
from inspect_ai.solver import Generate, TaskState, solver

from pv_harness.provider.api import PVModelArgError
from pv_harness.provider.batching import Feed
from pv_harness.provider.engine import Engine, GenRequest, GenResult
from pv_harness.provider.interventions import MonitorSpec, SteerSpec

from .test_provider import engine, ids, vec  # noqa: F401 - the lively tiny model's fixtures

SLOTS = 3
# Tokens are identical; float32 values differ in the last bits, because padding and cut columns change the
# width of attention's sums. The lively model's activations are large (projections of 10-70), so the
# bounds are those a static padded batch needs too (it deviates by up to 8e-5 in logprobs, 1e-5 relative in
# projections; a continuous batch by up to 5e-5 and 4e-5).
LOGPROB_ABS = 1e-4
MONITOR_REL = 1e-4


def mixed_requests(engine: Engine) -> list[GenRequest]:  # noqa: F811 - the fixture's name
    """Greedy and seeded, steered and monitored, stop strings and logprobs, prompts and lengths that differ."""
    plain = engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=12)])[0]
    stop = engine.tokenizer.decode(plain.token_ids[5:7])
    monitor = [MonitorSpec(layer=3, vector=vec(20)), MonitorSpec(layer=1, vector=vec(21))]
    return [
        GenRequest(prompt_ids=ids(engine, 1), max_new_tokens=12, logprobs=True, top_logprobs=3),
        GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=5, temperature=1.0, top_p=0.95, seed=7),
        GenRequest(prompt_ids=ids(engine, 2), max_new_tokens=9, monitor=monitor,
                   steer=[SteerSpec(layer=2, vector=vec(3, 10), coef=6.0)]),
        GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=12, stop_seqs=[stop], logprobs=True),
        GenRequest(prompt_ids=ids(engine, 1), max_new_tokens=3, temperature=0.8, top_k=20, seed=3, monitor=monitor[:1],
                   steer=[SteerSpec(layer=1, vector=vec(4), coef=1.0, op="ablate", positions="all")]),
        GenRequest(prompt_ids=ids(engine, 2), max_new_tokens=1, monitor=monitor[1:]),
        GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=7, logprobs=True, monitor=monitor,
                   steer=[SteerSpec(layer=3, vector=vec(6, 10), coef=-5.0, positions="prompt")]),
        GenRequest(prompt_ids=ids(engine, 1), max_new_tokens=10, temperature=1.2, seed=11),
    ]


def assert_same(got: GenResult, alone: GenResult) -> None:
    assert (got.token_ids, got.text, got.stop_reason) == (alone.token_ids, alone.text, alone.stop_reason)
    assert (got.input_tokens, got.output_tokens) == (alone.input_tokens, alone.output_tokens)
    if alone.logprobs is None:
        assert got.logprobs is None
    else:
        assert got.logprobs is not None and len(got.logprobs) == len(alone.logprobs)
        for g, a in zip(got.logprobs, alone.logprobs, strict=True):
            assert g.token_id == a.token_id and g.logprob == pytest.approx(a.logprob, abs=LOGPROB_ABS)
            assert [t for t, _ in g.top] == [t for t, _ in a.top]
            assert [v for _, v in g.top] == pytest.approx([v for _, v in a.top], abs=LOGPROB_ABS)
    if alone.monitor is None:
        assert got.monitor is None
    else:
        assert got.monitor is not None and len(got.monitor) == len(alone.monitor)
        for g, a in zip(got.monitor, alone.monitor, strict=True):
            assert g["tokens"] == a["tokens"] and len(g["projections"]) == len(a["projections"])
            assert g["projections"] == pytest.approx(a["projections"], rel=MONITOR_REL)
            assert g["prompt_last"] == pytest.approx(a["prompt_last"], rel=MONITOR_REL)


def test_each_request_gets_what_it_gets_alone_in_a_static_and_a_continuous_batch(engine: Engine) -> None:  # noqa: F811
    reqs = mixed_requests(engine)
    alone = [engine.generate([r])[0] for r in reqs]
    assert alone[3].stop_reason == "stop" and alone[5].output_tokens == 1  # the mix really has these cases
    assert alone[1].token_ids != engine.generate([GenRequest(prompt_ids=ids(engine, 0), max_new_tokens=5)])[0].token_ids
    static = engine.generate(reqs)
    finished: list[int] = []
    continuous = engine.generate(reqs, max_batch=SLOTS, finish=lambda i, r: finished.append(i))
    for s, c, a in zip(static, continuous, alone, strict=True):
        assert_same(s, a)
        assert_same(c, a)
    assert sorted(finished) == list(range(len(reqs)))
    assert finished.index(3) < finished.index(0)  # request 3 took a freed slot and ended while request 0 ran
    rows, columns = engine.peak_cache
    assert rows == SLOTS
    assert columns <= max(len(r.prompt_ids) + r.max_new_tokens for r in reqs)


def test_polled_requests_join_a_running_batch(engine: Engine) -> None:  # noqa: F811
    reqs = mixed_requests(engine)
    alone = [engine.generate([r])[0] for r in reqs]
    waiting = list(reqs[2:])
    asked: list[int] = []

    def poll(n: int) -> list[GenRequest]:
        asked.append(n)
        taken = waiting[:1]  # one at a time: newcomers arrive while the others run
        del waiting[:1]
        return taken

    got = engine.generate(reqs[:2], max_batch=SLOTS, poll=poll)
    assert not waiting and all(1 <= n <= SLOTS for n in asked)
    for g, a in zip(got, alone, strict=True):
        assert_same(g, a)
    assert engine.peak_cache[0] == SLOTS


def test_kv_memory_is_bounded_by_the_slots_not_by_the_requests_served(engine: Engine) -> None:  # noqa: F811
    reqs = [GenRequest(prompt_ids=ids(engine, i % 3), max_new_tokens=4 + 3 * (i % 4)) for i in range(10)]
    alone = [engine.generate([r])[0] for r in reqs]
    got = engine.generate(reqs, max_batch=2)
    assert [g.token_ids for g in got] == [a.token_ids for a in alone]
    rows, columns = engine.peak_cache
    assert rows == 2
    assert columns <= max(len(r.prompt_ids) + r.max_new_tokens for r in reqs)
    engine.generate(reqs)
    assert engine.peak_cache[0] == len(reqs)  # a static batch holds every request at once


@solver
def generate_with_sample_config():
    """generate(), with per-sample GenerateConfig fields taken from the sample's metadata."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        return await generate(state, **state.metadata["config"])

    return solve


@task
def uneven_lengths() -> Task:
    steer = {"steer": [{"vector": vec(3, 10).tolist(), "layer": 2, "coef": 6.0}]}
    monitor = {"monitor": [{"vector": vec(20).tolist(), "layer": 3}]}
    configs = [
        {"max_tokens": 12, "logprobs": True},
        {"max_tokens": 2, "temperature": 1.0, "seed": 5, "extra_body": {"pv": steer}},
        {"max_tokens": 9, "extra_body": {"pv": monitor}},
        {"extra_body": {"pv": {"continuations": ["yes", "no"]}}},
        {"max_tokens": 4, "temperature": 0.9, "seed": 9, "extra_body": {"pv": {**steer, **monitor}}},
    ]
    questions = ["What is 2+2?", "Name a colour.", "Say hello.", "Who are you?", "What is the capital of France?"]
    samples = [Sample(input=q, id=str(i), metadata={"config": c})
               for i, (q, c) in enumerate(zip(questions, configs, strict=True))]
    return Task(dataset=samples, solver=generate_with_sample_config(), config=GenerateConfig(temperature=0.0))


def test_inspect_eval_with_continuous_batching_equals_static(lively_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    joined: list[int] = []
    poll = Feed.poll

    def counting(self: Feed, max_n: int) -> list:
        got = poll(self, max_n)
        joined.extend(k for k, _ in got)
        return got

    monkeypatch.setattr(Feed, "poll", counting)
    outputs = {}
    for batching in ("continuous", "static"):
        (log,) = eval(uneven_lengths(), model=f"pv/{lively_dir}", model_args={"max_batch": 2, "batching": batching},
                      log_dir=str(tmp_path / batching), display="none", max_connections=5)
        assert log.status == "success", log.error
        outputs[batching] = {s.id: s.output for s in log.samples or []}
    assert [outputs["continuous"][str(i)].usage.output_tokens for i in (0, 1, 2, 4)] == [12, 2, 9, 4]
    assert joined  # some requests joined a running batch
    for sid, static in outputs["static"].items():
        continuous = outputs["continuous"][sid]
        assert continuous.completion == static.completion and continuous.stop_reason == static.stop_reason
        if static.metadata and "pv_monitor" in static.metadata:
            got, want = continuous.metadata["pv_monitor"][0], static.metadata["pv_monitor"][0]
            assert got["projections"] == pytest.approx(want["projections"], rel=MONITOR_REL)
        if static.choices[0].logprobs is not None:
            assert [x.logprob for x in continuous.choices[0].logprobs.content] == pytest.approx(
                [x.logprob for x in static.choices[0].logprobs.content], abs=LOGPROB_ABS)
    scored = outputs["continuous"]["3"].metadata["pv_continuations"]["logprobs"]
    assert scored == pytest.approx(outputs["static"]["3"].metadata["pv_continuations"]["logprobs"], abs=LOGPROB_ABS)


def test_an_unknown_batching_mode_is_a_clear_error(lively_dir: Path) -> None:
    with pytest.raises(PVModelArgError, match="-M batching=dynamic is not a batching mode; use one of continuous, "
                                              "static"):
        get_model(f"pv/{lively_dir}", batching="dynamic", memoize=False)
