"""The `pv/` model provider: local transformers models for inspect, with steering, monitoring and scoring.

    inspect eval task.py --model pv/smollm2            # the embedded default model (an alias)
    inspect eval task.py --model pv/path/to/folder -M device=cpu -M dtype=float32 -M max_batch=16
        (also -M threads=N: torch CPU threads, process-wide; -M prepack=false: plain CPU linear layers;
         -M batching=static: no continuous batching, see below; other -M args go to from_pretrained)
    The default dtype on CPU is bfloat16 where the processor does bf16 natively, else float32
    (`PV_CPU_DTYPE=float32` keeps float32); every model call in the log records the resolved `dtype` and `device`.
    inspect eval task.py --model pv/Qwen/Qwen2.5-7B-Instruct   # a hub id (hub or local HF cache)

Per-request options travel in `GenerateConfig.extra_body["pv"]`, so they are logged and are part of
inspect's model-call cache key (`-M` model args are not):

- `steer`: `[{"vector": <file or floats>, "layer": 20, "coef": 1.5, "positions": "response", "op": "add",
  "kind": "response_avg_diff"}]`. `layer` follows hidden_states (0 = embeddings .. L); `positions` is
  `all` | `prompt` | `response` (default; the last prompt token and every generated token); `op` is `add`
  (coef required) or `ablate` (coef defaults to 1 = remove the direction). A vector is a safetensors file
  of `[L+1, H]` tensors (`kind` picks one, default `response_avg_diff`), the paper's `.pt` tensor file, or
  a list of H floats. Several entries combine (see `pv_harness.provider.interventions`).
- `monitor`: `[{"vector": ..., "layer": 20, "kind": ...}]` adds `ModelOutput.metadata["pv_monitor"]`, one
  dict per entry: `{"layer", "vector" (the path or "inline"), "kind", "tokens": [str], "projections":
  [float, one per token], "prompt_last": float, "response_mean": float | None}`. Projections are onto the
  unit vector, of hidden_states[layer] at each generated token's own position (an end-of-turn token is
  not a response token), and of the last prompt token; steering, if any, is included.
- `continuations`: `["0", "1", ..., "100"]` samples nothing: it returns `metadata["pv_continuations"] =
  {"continuations": [...], "logprobs": [float, ...], "end_of_turn": bool}`, each logprob the exact sum of
  the log-probabilities of the continuation's tokens followed by the chat template's end-of-turn token
  (omitted with `"end_of_turn": false`) after the templated prompt, computed in one batched pass over the
  prompt's KV cache; the most likely continuation is the completion. Usage counts the prompt and the scored
  tokens as input, and no output.
- `token_logprobs`: `true` (with `continuations`) adds to `pv_continuations` `"token_logprobs": [[float, one
  per scored token], ...]` and `"tokens": [[token text, ...], ...]`, one list per continuation (its end-of-turn
  token last, when scored); each `logprobs` entry is the sum of its list. A likelihood judge reads these.

Scoring many answers after one prompt costs little more than the answers: an engine keeps the KV caches of
recent unsteered prompts (`Engine.prompt_caches`, least recently used dropped beyond 256 MiB), and the
scoring requests of one batch that share a prompt and steering run as one pass, their results split back.

Seeds: a run seed S (`--seed S`) becomes each sample's own seed, derived from (S, sample id, epoch) by
`sample_seed`, so the n answers to one question differ, a rerun with S gives the same answers, and batching
changes nothing (every request samples with its own generator). Outside a sample S is used as is. The log's
model call records both (`seed`, `run_seed`).

One load per model per process: every `pv/` model with the same load arguments (model, device, dtype,
prepack, from_pretrained args; not max_batch, batching or threads) uses one shared `Engine` (`Engine.load`),
and so do extraction, `pv monitor`, `pv shift` and every step of `pv run` / `pv experiment`. inspect makes
several model instances per eval (`--model`, a grader role naming the same model, model-info lookups); after
the first, each costs nothing. Models on one engine with the same max_batch and batching share one batcher,
so subject and grader requests batch together, and the engine runs one batch at a time. `close()` stops a
batcher only when its last model closes, and leaves the engine loaded (`Engine.release` forgets it).

Batching (`-M batching=continuous`, the default): at most max_batch rows decode together, and when one
finishes a waiting request takes its slot at the next step, so short answers do not wait for the longest
one; scoring requests that arrive meanwhile are answered between decode steps. `-M batching=static` runs
each collected batch to its end before the next (for comparison). Either way every request gets the same
tokens it would get alone.

With no `temperature` in the config the model's own generation_config decides (greedy unless it sets
do_sample). Tools are not supported. A chat template without a system role gets the system text
prepended to the first user message.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessage,
    ChatMessageAssistant,
    GenerateConfig,
    Logprob,
    Logprobs,
    ModelAPI,
    ModelCall,
    ModelOutput,
    ModelUsage,
    TopLogprob,
    modelapi,
)
from inspect_ai.tool import ToolChoice, ToolInfo

from pv_harness.errors import PvError
from pv_harness.provider.batching import Batcher, Feed

if TYPE_CHECKING:
    from pv_harness.provider.engine import Engine

PV_KEYS = {"steer", "monitor", "continuations", "end_of_turn", "token_logprobs"}
DEFAULT_MAX_BATCH = 32
BATCHING = ("continuous", "static")
DEFAULT_MAX_TOKENS = 2048


def sample_seed(run_seed: int | None) -> int | None:
    """The seed of this request: `run_seed` made the running sample's own, from (run seed, sample id, epoch).

    inspect hands every request the same `--seed`; used as is, it would make the n answers to one question
    (its epochs) copies of one answer.
    """
    if run_seed is None:
        return None
    from inspect_ai.log._samples import sample_active  # inspect's handle on the running sample

    active = sample_active()
    if active is None:
        return run_seed
    key = f"{run_seed}\x00{active.sample.id}\x00{active.epoch}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1  # a non-negative int64: any torch seed


class PVModelArgError(ValueError, PvError):
    """A `-M` model argument the pv/ provider cannot use."""


class PVRequestError(ValueError, PvError):
    """An `extra_body["pv"]` request this provider cannot honour."""


def pv_options(config: GenerateConfig) -> dict[str, Any]:
    """The validated `extra_body["pv"]` dict of a request (empty when absent)."""
    options = (config.extra_body or {}).get("pv") or {}
    if not isinstance(options, dict):
        raise PVRequestError(f'extra_body["pv"] must be a dict, got {type(options).__name__}')
    unknown = set(options) - PV_KEYS
    if unknown:
        raise PVRequestError(f'unknown extra_body["pv"] key(s) {sorted(unknown)}; allowed: {sorted(PV_KEYS)}')
    conts = options.get("continuations")
    if conts is not None:
        if not isinstance(conts, list) or not conts or not all(isinstance(c, str) for c in conts):
            raise PVRequestError('"continuations" must be a non-empty list of strings')
        if options.get("monitor"):
            raise PVRequestError('"monitor" applies to generation; it cannot be combined with "continuations"')
    if not isinstance(options.get("end_of_turn", True), bool):
        raise PVRequestError('"end_of_turn" must be true or false')
    token_logprobs = options.get("token_logprobs", False)
    if not isinstance(token_logprobs, bool):
        raise PVRequestError('"token_logprobs" must be true or false')
    if token_logprobs and conts is None:
        raise PVRequestError('"token_logprobs" applies to "continuations"; for generated tokens set '
                             'GenerateConfig(logprobs=True)')
    return options


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("false", "0", "no", "off")
    return bool(value)


def run_batch(engine: Engine, requests: list[Any]) -> list[Any]:
    """Generation requests run as one batch; scoring requests that share a prompt and steering as one pass
    (a failed shared pass is retried one request at a time, so one bad request fails alone)."""
    from pv_harness.provider.engine import GenRequest, merge_scoring, scoring_groups, split_scoring

    results: list[Any] = [None] * len(requests)
    gen = [i for i, r in enumerate(requests) if isinstance(r, GenRequest)]
    if gen:
        try:
            for i, res in zip(gen, engine.generate([requests[i] for i in gen]), strict=True):
                results[i] = res
        except Exception as ex:  # noqa: BLE001 - fail these requests, not the scoring ones
            for i in gen:
                results[i] = ex
    scoring = [i for i, r in enumerate(requests) if not isinstance(r, GenRequest)]
    for group in scoring_groups([requests[i] for i in scoring]):
        indices = [scoring[g] for g in group]
        parts = [requests[i] for i in indices]
        if len(parts) > 1:
            try:
                for i, scored in zip(indices, split_scoring(engine.score(merge_scoring(parts)), parts), strict=True):
                    results[i] = scored
                continue
            except Exception:  # noqa: BLE001 - retried one by one below
                pass
        for i in indices:
            try:
                results[i] = engine.score(requests[i])
            except Exception as ex:  # noqa: BLE001
                results[i] = ex
    return results


def run_continuous(engine: Engine, requests: list[Any], feed: Feed[Any, Any], max_batch: int) -> None:
    """A continuous batch: generation requests in up to `max_batch` slots, each freed slot refilled from `feed`
    at once; scoring requests (those given and those polled) are answered as they come, between decode steps."""
    from pv_harness.provider.engine import GenRequest

    order: list[int] = []  # the feed's number of each generation request, in the engine's order

    def serve(items: list[tuple[int, Any]]) -> list[GenRequest]:
        scoring = [(k, r) for k, r in items if not isinstance(r, GenRequest)]
        for (k, _), result in zip(scoring, run_batch(engine, [r for _, r in scoring]), strict=True):
            feed.finish(k, result)
        gen = [(k, r) for k, r in items if isinstance(r, GenRequest)]
        order.extend(k for k, _ in gen)
        return [r for _, r in gen]

    engine.generate(serve(list(enumerate(requests))), max_batch=max_batch, poll=lambda n: serve(feed.poll(n)),
                    finish=lambda i, result: feed.finish(order[i], result))


class _Shared:
    """What the `pv/` models on one engine share: a batcher per (max_batch, batching) (the subject and the
    grader of a run usually ask the same, so their requests batch together), and a lock so one batch runs at
    a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.batchers: dict[tuple[int, str], Batcher[Any, Any]] = {}
        self.users: Counter[tuple[int, str]] = Counter()  # open models per (max_batch, batching)

    def run_batch(self, requests: list[Any]) -> list[Any]:
        with self.lock:
            return run_batch(self.engine, requests)

    def run_continuous(self, requests: list[Any], feed: Feed[Any, Any], max_batch: int) -> None:
        with self.lock:
            run_continuous(self.engine, requests, feed, max_batch)


_SHARED: dict[int, _Shared] = {}  # by id(engine); an entry holds its engine, so the id cannot be reused
_SHARED_LOCK = threading.Lock()


def _join(engine: Engine, key: tuple[int, str], name: str) -> tuple[_Shared, Batcher[Any, Any]]:
    with _SHARED_LOCK:
        shared = _SHARED.get(id(engine))
        if shared is None:
            shared = _SHARED[id(engine)] = _Shared(engine)
        batcher = shared.batchers.get(key)
        if batcher is None:
            max_batch, batching = key
            if batching == "continuous":
                batcher = Batcher(functools.partial(shared.run_continuous, max_batch=max_batch), max_batch=max_batch,
                                  name=name, continuous=True)
            else:
                batcher = Batcher(shared.run_batch, max_batch=max_batch, name=name)
            shared.batchers[key] = batcher
        shared.users[key] += 1
        return shared, batcher


def _leave(shared: _Shared, key: tuple[int, str]) -> None:
    with _SHARED_LOCK:
        shared.users[key] -= 1
        if shared.users[key] > 0:
            return
        del shared.users[key]
        batcher = shared.batchers.pop(key)
        if not shared.batchers:
            del _SHARED[id(shared.engine)]
    batcher.close()  # waits for its worker: outside the lock, so other models can come and go meanwhile


class PVModelAPI(ModelAPI):
    """A transformers causal LM served in-process, batching concurrent requests on its engine's worker thread."""

    def __init__(self, model_name: str, base_url: str | None = None, api_key: str | None = None,
                 config: GenerateConfig | None = None, **model_args: Any) -> None:
        super().__init__(model_name=model_name, base_url=base_url, api_key=api_key, api_key_vars=[],
                         config=config or GenerateConfig())
        from pv_harness.models import local_path
        from pv_harness.provider.engine import Engine

        device = model_args.pop("device", None)
        dtype = model_args.pop("dtype", None)
        self.max_batch = int(model_args.pop("max_batch", DEFAULT_MAX_BATCH))
        batching = str(model_args.pop("batching", BATCHING[0]))
        if batching not in BATCHING:
            raise PVModelArgError(f"-M batching={batching} is not a batching mode; use one of {', '.join(BATCHING)}")
        prepack = _flag(model_args.pop("prepack", True))
        threads = model_args.pop("threads", None)
        if threads is not None:
            import torch

            torch.set_num_threads(int(threads))  # process-wide, as torch has it
        self.engine = Engine.load(local_path(f"pv/{model_name}"), device=device, dtype=dtype, prepack=prepack,
                                  **model_args)
        self._batcher_key = (self.max_batch, batching)
        self._shared, self.batcher = _join(self.engine, self._batcher_key, name=f"pv-batcher:{model_name}")
        self._closed = False

    def _run_batch(self, requests: list[Any]) -> list[Any]:
        return self._shared.run_batch(requests)

    def close(self) -> None:
        """Give up this model's use of the shared batcher (its worker stops with its last user); the engine
        stays loaded for the rest of the process (`Engine.release` drops it)."""
        if not self._closed:
            self._closed = True
            _leave(self._shared, self._batcher_key)

    def max_tokens(self) -> int | None:
        return DEFAULT_MAX_TOKENS

    def max_connections(self) -> int:
        return self.max_batch

    def collapse_user_messages(self) -> bool:
        return True

    def collapse_assistant_messages(self) -> bool:
        return True

    async def generate(self, input: list[ChatMessage], tools: list[ToolInfo], tool_choice: ToolChoice,
                       config: GenerateConfig) -> tuple[ModelOutput, ModelCall]:
        from pv_harness.provider.engine import GenRequest
        from pv_harness.provider.interventions import parse_monitor, parse_steer

        if tools:
            raise NotImplementedError("the pv/ provider does not support tool calling")
        started = time.monotonic()
        engine = self.engine
        options = pv_options(config)
        messages = [{"role": m.role, "content": m.text} for m in input]
        for m in messages:
            if m["role"] not in ("system", "user", "assistant"):
                raise PVRequestError(f"the pv/ provider cannot send {m['role']!r} messages")
        prompt_text = engine.chat_text(messages)
        prompt_ids = engine.encode(prompt_text)
        steer = parse_steer(options.get("steer"), hidden=engine.hidden, num_layers=engine.num_layers,
                            cache=engine.vectors)
        # the resolved load (the default CPU dtype depends on the processor), so every model call in a log says it
        request: dict[str, Any] = {"prompt": prompt_text, "prompt_tokens": len(prompt_ids),
                                   "dtype": str(engine.dtype).removeprefix("torch."), "device": str(engine.device)}
        if options.get("continuations") is not None:
            return await self._score(options, prompt_text, prompt_ids, steer, request, started)

        monitor = parse_monitor(options.get("monitor"), hidden=engine.hidden, num_layers=engine.num_layers,
                                cache=engine.vectors)
        temperature, top_p, top_k = engine.default_sampling()
        if config.temperature is not None:
            temperature = float(config.temperature)
            top_p, top_k = None, None
        top_p = config.top_p if config.top_p is not None else top_p
        top_k = config.top_k if config.top_k is not None else top_k
        gen = GenRequest(
            prompt_ids=prompt_ids,
            max_new_tokens=config.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            stop_seqs=list(config.stop_seqs or []),
            seed=sample_seed(config.seed),
            logprobs=bool(config.logprobs) or bool(config.top_logprobs),
            top_logprobs=config.top_logprobs,
            steer=steer,
            monitor=monitor,
        )
        request.update(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=gen.max_new_tokens,
                       stop_seqs=gen.stop_seqs, seed=gen.seed, run_seed=config.seed,
                       pv=options or None)
        if gen.stop_seqs:
            try:  # built here, off the event loop, so that a bad stop string fails this request, not its batch
                await asyncio.to_thread(engine.stop_criteria, gen.stop_seqs)
            except ValueError as ex:
                raise PVRequestError(f"stop_seqs {gen.stop_seqs!r} cannot be matched with this model's tokenizer: "
                                     f"{ex}") from ex
        result = await self.batcher.submit(gen)
        logprobs = None
        if result.logprobs is not None:
            logprobs = Logprobs(content=[
                Logprob(token=engine.token_text(lp.token_id), logprob=lp.logprob,
                        bytes=engine.token_bytes(lp.token_id),
                        top_logprobs=[TopLogprob(token=engine.token_text(t), logprob=v, bytes=engine.token_bytes(t))
                                      for t, v in lp.top] or None)
                for lp in result.logprobs])
        output = ModelOutput(
            model=self.model_name,
            choices=[ChatCompletionChoice(
                message=ChatMessageAssistant(content=result.text, model=self.model_name, source="generate"),
                stop_reason=result.stop_reason, logprobs=logprobs)],
            usage=ModelUsage(input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                             total_tokens=result.input_tokens + result.output_tokens),
            time=time.monotonic() - started,
            metadata={"pv_monitor": result.monitor} if result.monitor is not None else None,
        )
        response = {"completion": result.text, "stop_reason": result.stop_reason,
                    "output_tokens": result.output_tokens}
        return output, ModelCall.create(request=request, response=response, time=output.time)

    async def _score(self, options: dict[str, Any], prompt_text: str, prompt_ids: list[int], steer: list[Any],
                     request: dict[str, Any], started: float) -> tuple[ModelOutput, ModelCall]:
        from pv_harness.provider.engine import ScoreRequest

        end_of_turn = options.get("end_of_turn", True)
        conts: list[str] = options["continuations"]
        ids = [self.engine.continuation_ids(prompt_text, prompt_ids, c, end_of_turn) for c in conts]
        result = await self.batcher.submit(ScoreRequest(prompt_ids=prompt_ids, continuations=ids, steer=steer))
        best = max(range(len(conts)), key=lambda i: result.logprobs[i])
        scored: dict[str, Any] = {"continuations": conts, "logprobs": result.logprobs, "end_of_turn": end_of_turn}
        if options.get("token_logprobs", False):
            scored["token_logprobs"] = result.token_logprobs
            scored["tokens"] = [[self.engine.token_text(t) for t in c] for c in ids]
        output = ModelOutput(
            model=self.model_name,
            choices=[ChatCompletionChoice(
                message=ChatMessageAssistant(content=conts[best], model=self.model_name, source="generate"),
                stop_reason="stop")],
            usage=ModelUsage(input_tokens=result.input_tokens + result.scored_tokens, output_tokens=0,
                             total_tokens=result.input_tokens + result.scored_tokens),
            time=time.monotonic() - started,
            metadata={"pv_continuations": scored},
        )
        request.update(pv=options)
        return output, ModelCall.create(request=request, response={"best": conts[best], **scored},
                                        time=output.time)


@modelapi(name="pv")
def pv() -> type[ModelAPI]:
    """inspect's factory for `pv/<model>`; torch and transformers load when a model is created."""
    return PVModelAPI
