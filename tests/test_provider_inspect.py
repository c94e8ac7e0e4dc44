"""The pv/ provider through inspect: registration, extra_body requests, logs, batching, and real SmolLM2."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from inspect_ai import Task, eval, task
from inspect_ai.dataset import Sample
from inspect_ai.log import read_eval_log
from inspect_ai.model import GenerateConfig, ModelOutput, get_model
from inspect_ai.solver import Generate, TaskState, solver

from pv_harness.provider.api import PVRequestError, pv_options
from pv_harness.provider.batching import Batcher

from .batching_events import QuietQueue

QUESTIONS = ["What is 2+2?", "Name a colour.", "Say hello.", "Who are you?", "What is the capital of France?"]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir: Path) -> Path:
    return tiny_model_dir


@solver
def generate_with_sample_config():
    """generate(), with per-sample GenerateConfig fields taken from the sample's metadata."""

    async def solve(state: TaskState, generate: Generate) -> TaskState:
        return await generate(state, **(state.metadata.get("config") or {}))

    return solve


@task
def mixed_requests(vector: list[float]) -> Task:
    samples = [
        Sample(input=QUESTIONS[0], id="plain"),
        Sample(input=QUESTIONS[1], id="steered",
               metadata={"config": {"extra_body": {"pv": {"steer": [
                   {"vector": vector, "layer": 2, "coef": 40.0, "positions": "response"}]}}}}),
        Sample(input=QUESTIONS[2], id="monitored",
               metadata={"config": {"logprobs": True, "top_logprobs": 3,
                                    "extra_body": {"pv": {"monitor": [{"vector": vector, "layer": 3}]}}}}),
        Sample(input=QUESTIONS[3], id="judged",
               metadata={"config": {"extra_body": {"pv": {"continuations": [str(i) for i in range(101)]}}}}),
        Sample(input=[{"role": "system", "content": "Answer in French."}, {"role": "user", "content": QUESTIONS[4]}],
               id="system"),
    ]
    return Task(dataset=samples, solver=generate_with_sample_config(),
                config=GenerateConfig(max_tokens=8, temperature=0.0))


def test_inspect_eval_through_pv_folder(model_dir: Path, tmp_path: Path) -> None:
    vector = torch.randn(64, generator=torch.Generator().manual_seed(0)).tolist()
    (log,) = eval(mixed_requests(vector), model=f"pv/{model_dir}", log_dir=str(tmp_path), display="none",
                  max_connections=8)
    assert log.status == "success", log.error
    log = read_eval_log(log.location, resolve_attachments=True)  # all of it must survive the log file
    samples = {s.id: s for s in log.samples or []}
    for s in samples.values():
        assert s.output.usage is not None and s.output.usage.input_tokens > 0
    for sid in ("plain", "steered", "monitored", "system"):
        out = samples[sid].output
        assert out.stop_reason == "max_tokens" and out.usage.output_tokens == 8
    monitor = samples["monitored"].output.metadata["pv_monitor"]
    assert monitor[0]["layer"] == 3 and len(monitor[0]["projections"]) == 8 == len(monitor[0]["tokens"])
    assert isinstance(monitor[0]["prompt_last"], float) and isinstance(monitor[0]["response_mean"], float)
    logprobs = samples["monitored"].output.choices[0].logprobs
    assert logprobs is not None and len(logprobs.content) == 8 and len(logprobs.content[0].top_logprobs) == 3
    judged = samples["judged"].output
    scores = judged.metadata["pv_continuations"]
    assert scores["continuations"] == [str(i) for i in range(101)] and scores["end_of_turn"] is True
    assert len(scores["logprobs"]) == 101 and all(x < 0 for x in scores["logprobs"])
    assert judged.completion == scores["continuations"][max(range(101), key=scores["logprobs"].__getitem__)]
    # the steering request is in the logged config of its model call (so it is part of the cache key)
    events = [e for e in samples["steered"].events if e.event == "model"]
    assert events[0].config.extra_body["pv"]["steer"][0]["coef"] == 40.0
    assert events[0].call is not None and "<|im_start|>assistant" in events[0].call.request["prompt"]


def test_concurrent_requests_share_batches(model_dir: Path) -> None:
    """Five concurrent samples are one batch, and each answer equals the one it gets alone."""
    model = get_model(f"pv/{model_dir}", memoize=False)
    api = model.api
    n = len(QUESTIONS)
    requests = QuietQueue(quiet_after=range(n, 2 * n + 1))  # nothing more after the concurrent five, then each alone
    api.batcher = Batcher(api._run_batch, max_batch=api.max_batch, clock=requests.clock, requests=requests)

    async def run() -> list[str]:
        outs = await asyncio.gather(*[model.generate(q, config=GenerateConfig(max_tokens=4, temperature=0))
                                      for q in QUESTIONS])
        return [o.completion for o in outs]

    completions = asyncio.run(run())
    assert api.batcher.batch_sizes == [n]
    alone = [asyncio.run(model.generate(q, config=GenerateConfig(max_tokens=4, temperature=0))).completion
             for q in QUESTIONS]
    assert api.batcher.batch_sizes == [n] + [1] * n
    assert completions == alone
    api.batcher.close()


def test_bad_requests_fail_the_request_clearly(model_dir: Path) -> None:
    model = get_model(f"pv/{model_dir}")
    bad = [
        ({"steer": [{"vector": [0.0] * 63, "layer": 1, "coef": 1}]},
         "steer: the inline vector has size 63, but this model's hidden size is 64"),
        ({"steer": [{"vector": [0.0] * 64, "layer": 9, "coef": 1}]},
         r"steer: layer 9 is out of range: this model has hidden-states layers 0\.\.4"),
        ({"stear": []},
         r"""unknown extra_body\["pv"\] key\(s\) \['stear'\]; """
         r"""allowed: \['continuations', 'end_of_turn', 'monitor', 'steer', 'token_logprobs'\]"""),
        ({"continuations": []}, '"continuations" must be a non-empty list of strings'),
        ({"continuations": ["1"], "monitor": [{"vector": [1.0] * 64, "layer": 1}]},
         '"monitor" applies to generation; it cannot be combined with "continuations"'),
    ]
    for options, message in bad:
        config = GenerateConfig(max_tokens=2, extra_body={"pv": options}, max_retries=0)
        with pytest.raises(ValueError, match=message):
            asyncio.run(model.generate("hi", config=config))


def test_unmatchable_stop_strings_fail_their_own_request(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = get_model(f"pv/{model_dir}", memoize=False)
    engine = model.api.engine
    build = engine.stop_criteria

    def stop_criteria(stop_seqs: list[str]):
        if "\x00" in stop_seqs:  # what transformers raises when no token can end a stop string
            raise ValueError("Stop string preprocessing was unable to identify tokens matching one or more of the "
                             "supplied stop string(s).")
        return build(stop_seqs)

    monkeypatch.setattr(engine, "stop_criteria", stop_criteria)

    async def run() -> list[ModelOutput | BaseException]:
        configs = [GenerateConfig(max_tokens=3, temperature=0, stop_seqs=stops, max_retries=0)
                   for stops in (["\x00"], ["never seen"], None)]
        return await asyncio.gather(*[model.generate("hi", config=c) for c in configs], return_exceptions=True)

    bad, good, plain = asyncio.run(run())
    assert isinstance(bad, PVRequestError)
    assert str(bad).startswith(r"stop_seqs ['\x00'] cannot be matched with this model's tokenizer: Stop string")
    assert isinstance(good, ModelOutput) and isinstance(plain, ModelOutput) and good.completion == plain.completion
    model.api.close()


def test_pv_options_defaults() -> None:
    assert pv_options(GenerateConfig()) == {}
    assert pv_options(GenerateConfig(extra_body={"other": 1})) == {}
    with pytest.raises(PVRequestError, match='"end_of_turn" must be true or false'):
        pv_options(GenerateConfig(extra_body={"pv": {"continuations": ["a"], "end_of_turn": "no"}}))


def test_registered_as_an_inspect_model_api() -> None:
    from inspect_ai._util.registry import registry_find, registry_info

    import pv_harness._registry  # noqa: F401  (what inspect's entry point imports)

    names = [registry_info(o).name for o in registry_find(lambda i: i.type == "modelapi")]
    assert "pv_harness/pv" in names


@task
def two_questions(extra_body: dict | None = None) -> Task:
    samples = [Sample(input="What is the capital of France?", id="france"), Sample(input="Say hello.", id="hello")]
    return Task(dataset=samples, config=GenerateConfig(max_tokens=16, temperature=0.0, extra_body=extra_body))


@pytest.mark.smollm2
def test_smollm2_eval_with_and_without_steering(tmp_path: Path) -> None:
    """The real model answers sensibly; a strong vector at a middle layer changes what it says, and is monitored."""
    from safetensors.torch import save_file

    from pv_harness import models

    if not models.is_installed("smollm2"):
        pytest.fail("the embedded model is not installed: run `pv model install smollm2` (make test does)")
    rows = torch.randn(31, 576, generator=torch.Generator().manual_seed(0))
    rows = rows / rows.norm(dim=-1, keepdim=True)
    vectors = tmp_path / "random.safetensors"
    save_file({"response_avg_diff": rows}, str(vectors))
    steer = {"pv": {"steer": [{"vector": str(vectors), "layer": 10, "coef": 150.0, "positions": "response"}],
                    "monitor": [{"vector": str(vectors), "layer": 10}]}}
    plain, steered = eval([two_questions(), two_questions(extra_body=steer)], model="pv/smollm2",
                          log_dir=str(tmp_path), display="none")
    assert plain.status == steered.status == "success"
    answers = {s.id: s.output.completion for s in plain.samples or []}
    assert "Paris" in answers["france"]
    changed = {s.id: s.output.completion for s in steered.samples or []}
    assert changed != answers
    for s in steered.samples or []:
        (monitor,) = s.output.metadata["pv_monitor"]
        assert monitor["vector"] == str(vectors) and len(monitor["projections"]) == len(monitor["tokens"]) > 0
