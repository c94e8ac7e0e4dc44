"""The generation engine behind `pv/`: a batched decode loop with a KV cache, written out by hand.

Why not `model.generate`: every row of a batch needs its own steering, monitoring, sampling settings and
random generator, and a judge needs exact continuation log-probabilities; a short explicit loop does all of
that in one place. Prompts are left-padded; position ids come from the attention mask, so a padded row
computes what it would alone (up to float rounding). Batching is static or continuous (a freed row's slot
goes to the next waiting request at once; see `_Batch`). The sampling itself is transformers': its warpers
(temperature, top-k, top-p, in `generate`'s order) and its `StopStringCriteria`, so a seeded request samples
the very tokens `model.generate` does after `torch.manual_seed` with the same seed.

Monitoring convention: for each generated token (an end-of-turn token excluded) the projection is taken
at that token's own position, i.e. when it is fed back in; `prompt_last` is the last prompt position (whose
output produced the first token). These are the positions extraction averages over (`response_avg`,
`prompt_last`), so monitored values and vectors share one frame. A token the loop never fed (the last one,
when generation stopped on length or a stop sequence) is fed once more, up to the deepest monitored layer.
"""

from __future__ import annotations

import copy
import json
import random
import statistics
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from pv_harness.provider.cpu import DtypeError, default_cpu_dtype
from pv_harness.provider.interventions import Interventions, MonitorSpec, SteerSpec, StopForward
from pv_harness.provider.kv_cache import PromptCaches, cache_bytes, continue_prompt, returned_cache, with_cache
from pv_harness.provider.layers import ModelLayers, find_layers
from pv_harness.provider.prepack import prepack_linears
from pv_harness.vectors.files import VectorCache

StopReason = Literal["stop", "max_tokens", "model_length"]
SYSTEM_JOIN = "\n\n"
SCORE_MEMORY_BYTES = 512 * 2**20  # per chunk of continuations (expanded KV cache plus logits)
LOGSUMEXP_BYTES = 32 * 2**20  # float32 logits normalised at a time when scoring
PROMPT_CACHE_BYTES = 256 * 2**20  # unsteered prompt KV caches an engine keeps for scoring
STOP_CRITERIA_KEPT = 8  # distinct stop-string sets whose vocabulary index an engine keeps
_LOADED: dict[str, tuple[tuple[tuple[str, int, int], ...], Engine]] = {}  # Engine.load's shared copies
_LOAD_LOCK = threading.Lock()


@dataclass
class GenRequest:
    """One prompt to continue; `temperature` 0 means greedy."""

    prompt_ids: list[int]
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    stop_seqs: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    steer: list[SteerSpec] = field(default_factory=list)
    monitor: list[MonitorSpec] = field(default_factory=list)
    # streaming: called with each generated token's text and its projection on the first monitor (None if
    # unmonitored), in order, as soon as that projection is known (one decode step after sampling)
    on_token: Callable[[str, float | None], None] | None = None


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class GenResult:
    token_ids: list[int]  # generated tokens, a final end-of-turn token included
    text: str
    stop_reason: StopReason
    input_tokens: int
    output_tokens: int
    logprobs: list[TokenLogprob] | None = None
    monitor: list[dict[str, Any]] | None = None


@dataclass
class ScoreRequest:
    """Score each continuation (token ids, end of turn already appended) after the prompt."""

    prompt_ids: list[int]
    continuations: list[list[int]]
    steer: list[SteerSpec] = field(default_factory=list)


@dataclass
class ScoreResult:
    logprobs: list[float]  # per continuation, the sum of its `token_logprobs`
    input_tokens: int
    scored_tokens: int
    token_logprobs: list[list[float]] = field(default_factory=list)  # per continuation, one per token


def resolve_device(device: str | None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: Any, device: str) -> Any:
    """On CPU bfloat16 where the processor does it natively (about 2x faster), else float32
    (`provider.cpu.default_cpu_dtype`); the checkpoint's own dtype on accelerators."""
    if dtype is None:
        return default_cpu_dtype() if device.startswith("cpu") else "auto"
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(resolved, torch.dtype):
        raise DtypeError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
    return resolved


def _load_key(name_or_path: str | Path, device: str, dtype: Any, prepack: bool,
              from_pretrained: dict[str, Any]) -> tuple[str, tuple[tuple[str, int, int], ...]]:
    """What makes two loads the same (the resolved folder or the hub id, and every load argument), and the
    folder's files (name, size, mtime) so that weights rewritten on disk are not served stale."""
    path = Path(name_or_path)
    where = str(path.resolve()) if path.exists() else str(name_or_path)
    key = repr((where, device, str(dtype), prepack, sorted(from_pretrained.items())))
    files = sorted(f for f in path.iterdir() if f.is_file()) if path.is_dir() else []
    return key, tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)


class Engine:
    """A loaded model and tokenizer, with batched generation and continuation scoring."""

    def __init__(self, model: Any, tokenizer: Any, *, prepack: bool = True) -> None:
        self.model = model.eval()
        self.prepacked = prepack_linears(model) if prepack else 0  # faster CPU decoding (float32, bfloat16)
        self.tokenizer = tokenizer
        self.layers: ModelLayers = find_layers(model)
        text_config = model.config.get_text_config()
        self.hidden: int = text_config.hidden_size
        self.num_layers = self.layers.num_layers
        self.max_length: int | None = getattr(text_config, "max_position_embeddings", None)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.vectors = VectorCache()
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self.system_role = self._template_has_system_role()
        self.end_of_turn_id = self._find_end_of_turn()
        self.stop_ids = self._stop_ids()
        pad = tokenizer.pad_token_id
        self.pad_id: int = pad if pad is not None else self.end_of_turn_id
        self._byte_decoder = _byte_decoder(tokenizer)
        self._stop_criteria: dict[tuple[str, ...], Any] = {}
        self._stop_lock = threading.Lock()
        self._tree_scoring: bool | None = None  # decided on the first continuation request
        self.prompt_caches = PromptCaches(PROMPT_CACHE_BYTES)
        self.peak_cache = (0, 0)  # (rows, columns) of the largest KV cache the last generation held

    @classmethod
    def load(cls, name_or_path: str | Path, *, device: str | None = None, dtype: Any = None,
             prepack: bool = True, **from_pretrained: Any) -> Engine:
        """The transformers causal LM of a folder or hub id, loaded once per process for the same arguments.

        Every caller with the same (model, device, dtype, prepack, from_pretrained args) gets the same Engine:
        the subject and grader `pv/` models, inspect's extra model instances, extraction, monitoring and shift
        all share one copy of the weights. A folder whose files changed since is loaded again. Nothing may
        change a shared engine's weights (fine-tuning loads its own model); `release` drops one.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, device)
        key, stamp = _load_key(name_or_path, device, torch_dtype, prepack, from_pretrained)
        with _LOAD_LOCK:
            held = _LOADED.get(key)
            if held is None or held[0] != stamp:
                tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
                model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=torch_dtype, **from_pretrained)
                # transformers' stubs type `.to` through a decorator that expects the model again
                held = _LOADED[key] = (stamp, cls(model.to(device), tokenizer, prepack=prepack))  # type: ignore[arg-type]
        return held[1]

    def release(self) -> None:
        """Forget this engine as the process's shared copy: the next `load` reads the weights again, and the
        memory is freed once its last user lets go of it."""
        with _LOAD_LOCK:
            for key in [k for k, (_, engine) in _LOADED.items() if engine is self]:
                del _LOADED[key]

    def default_sampling(self) -> tuple[float, float | None, int | None]:
        """(temperature, top_p, top_k) when a request sets no temperature: the model's generation_config."""
        gc = getattr(self.model, "generation_config", None)
        if gc is not None and getattr(gc, "do_sample", False):
            return float(gc.temperature or 1.0), gc.top_p, gc.top_k
        return 0.0, None, None

    # ---- prompts -------------------------------------------------------------------------------------------

    def _render(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, **kwargs))

    def _template_has_system_role(self) -> bool:
        if not self.has_template:
            return True
        marker = "PV-SYSTEM-MARKER"
        try:
            text = self._render([{"role": "system", "content": marker}, {"role": "user", "content": "hi"}],
                                add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - templates raise anything (jinja's raise_exception) for system turns
            return False
        return marker in text

    def _find_end_of_turn(self) -> int:
        """The token a chat template puts right after an assistant message (else the tokenizer's eos)."""
        eos = self.tokenizer.eos_token_id
        if self.has_template:
            marker = "PV-ANSWER-MARKER"
            try:
                text = self._render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}])
                tail = text.split(marker, 1)[1]
                ids = self.tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
                if ids and ids[0] in set(self.tokenizer.all_special_ids) | set(self._added_special_ids()):
                    return int(ids[0])
            except Exception:  # noqa: BLE001 - fall back to eos below
                pass
        if eos is None:
            raise ValueError("the tokenizer has no eos token and no chat template end-of-turn token")
        return int(eos)

    def _added_special_ids(self) -> list[int]:
        decoder = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        return [i for i, t in decoder.items() if getattr(t, "special", False)]

    def _stop_ids(self) -> set[int]:
        ids = {self.end_of_turn_id}
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if gen_eos is not None:
            ids.update(int(i) for i in (gen_eos if isinstance(gen_eos, list) else [gen_eos]))
        return ids

    def chat_text(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt text: the chat template with the generation prompt.

        A template without a system role gets the system text folded into the first user message
        (separated by a blank line). A final assistant message is continued, not closed (prefill).
        Without a chat template, turns are written as `role: content` lines ending in `assistant:`.
        """
        msgs = [dict(m) for m in messages]
        if not self.system_role:
            system = SYSTEM_JOIN.join(m["content"] for m in msgs if m["role"] == "system")
            msgs = [m for m in msgs if m["role"] != "system"]
            if system:
                first_user = next((m for m in msgs if m["role"] == "user"), None)
                if first_user is None:
                    msgs.insert(0, {"role": "user", "content": system})
                else:
                    first_user["content"] = system + SYSTEM_JOIN + first_user["content"]
        prefill = bool(msgs) and msgs[-1]["role"] == "assistant"
        if not self.has_template:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in msgs)
            return text.removesuffix("\n") if prefill else text + "assistant:"
        if prefill:
            return self._render(msgs, continue_final_message=True)
        return self._render(msgs, add_generation_prompt=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of already-templated text (the template supplies any special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def continuation_ids(self, prompt_text: str, prompt_ids: list[int], continuation: str,
                         end_of_turn: bool = True) -> list[int]:
        """Token ids of `continuation` as they follow the prompt (tokenised together), plus end of turn."""
        full = self.encode(prompt_text + continuation)
        n = len(prompt_ids)
        ids = full[n:] if full[:n] == prompt_ids else self.encode(continuation)
        if end_of_turn:
            ids = [*ids, self.end_of_turn_id]
        if not ids:
            raise ValueError("an empty continuation without end of turn has nothing to score")
        return ids

    # ---- token strings -------------------------------------------------------------------------------------

    def token_text(self, token_id: int) -> str:
        """A readable string for one token (spaces as spaces; special tokens by name)."""
        return str(self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False))

    def token_bytes(self, token_id: int) -> list[int]:
        """The exact bytes of a byte-level BPE token; otherwise the UTF-8 of its text."""
        if self._byte_decoder is not None:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            if isinstance(piece, str) and all(ch in self._byte_decoder for ch in piece):
                return [self._byte_decoder[ch] for ch in piece]
        return list(self.token_text(token_id).encode("utf-8"))

    def stop_criteria(self, stop_seqs: Sequence[str]) -> Any:
        """transformers' `StopStringCriteria` for these stop strings, kept per set: building one indexes the
        whole vocabulary (a few hundred ms), and a task sends the same stop strings with every request."""
        key = tuple(stop_seqs)
        with self._stop_lock:  # the provider builds them on a helper thread, the batch worker reads them
            if key not in self._stop_criteria:
                from transformers import StopStringCriteria

                if len(self._stop_criteria) >= STOP_CRITERIA_KEPT:
                    del self._stop_criteria[next(iter(self._stop_criteria))]
                self._stop_criteria[key] = StopStringCriteria(self.tokenizer, list(key))
            return self._stop_criteria[key]

    # ---- generation ----------------------------------------------------------------------------------------

    def generate(self, requests: Sequence[GenRequest], *, max_batch: int | None = None,
                 poll: Callable[[int], list[GenRequest]] | None = None,
                 finish: Callable[[int, GenResult], None] | None = None) -> list[GenResult]:
        """Generate for requests; each row keeps its own settings, steering and monitors.

        Without `max_batch` or `poll` the requests run as one static batch. With them batching is
        continuous: at most `max_batch` rows at once (default: as many as given), and a finished row's slot
        goes at once to the next waiting request, from `requests`, then from `poll(free slots)` (which must
        not block); `finish(index, result)` gets each result as soon as its row ends. Returns every
        request's result (those given, then those polled), each the same as the request would get alone.
        """
        if not requests:
            return []
        self.peak_cache = (0, 0)
        with torch.inference_mode():
            return _Batch(self, list(requests), max_batch=max_batch, poll=poll, finish=finish).run()

    def score(self, request: ScoreRequest) -> ScoreResult:
        """Token log-probs of each continuation after the prompt, and their sums, over the prompt's KV cache."""
        with torch.inference_mode():
            return self._score(request)

    def _prompt_pass(self, request: ScoreRequest) -> tuple[Any, torch.Tensor, Interventions | None]:
        """The prompt's KV cache, its next-token log-probs and the request's steering hooks.

        Unsteered prompts come from (and go to) `prompt_caches`; a steered prompt runs every time.
        """
        if not request.steer:
            kept = self.prompt_caches.get(request.prompt_ids)
            if kept is not None:
                return kept[0], kept[1], None
        dev = self.device
        prompt = torch.tensor([request.prompt_ids], device=dev)
        interventions = None
        if request.steer:
            interventions = Interventions(self.layers, [request.steer], device=dev, dtype=self.dtype)
            last = torch.zeros_like(prompt, dtype=torch.bool)
            last[:, -1] = True
            interventions.set_step([0], prompt=torch.ones_like(last), response=last)
        with interventions.hooks() if interventions is not None else nullcontext():
            out = self.model(input_ids=prompt, attention_mask=torch.ones_like(prompt), use_cache=True,
                             logits_to_keep=1)
        cache = returned_cache(out)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        if not request.steer:
            self.prompt_caches.put(request.prompt_ids, cache, first)
        return cache, first, interventions

    def _score_tree(self, request: ScoreRequest, cache: Any, first: Any, n_prompt: int,
                    interventions: Interventions | None) -> list[list[float]] | None:
        """Each continuation's token log-probs from forward passes over their prefix tree, after the prompt.

        "0".."100" share their first digits, so 101 continuations need only 101 distinct prefixes; each
        prefix token attends to the prompt and its own ancestors (a 4D attention mask), so every
        log-probability is exactly what that continuation alone would get. Continuations go in sorted order
        (shared prefixes side by side), in groups whose logits fit `SCORE_MEMORY_BYTES`, each over a copy of
        the prompt's cache. None if the model refuses a 4D mask (then the row-per-continuation pass is used).
        """
        conts = request.continuations
        values = [[float(first[c[0]])] for c in conts]
        per_node = cache_bytes(cache) / max(n_prompt, 1) + 4 * first.shape[-1]
        budget = max(1, int(SCORE_MEMORY_BYTES // per_node))
        group: list[int] = []
        nodes: dict[tuple[int, ...], int] = {}
        for i in sorted(range(len(conts)), key=lambda i: conts[i]):
            new = [p for p in (tuple(conts[i][:k]) for k in range(1, len(conts[i]))) if p not in nodes]
            if nodes and len(nodes) + len(new) > budget:
                if not self._tree_pass(request, group, nodes, cache, n_prompt, interventions, values):
                    return None
                group, nodes = [], {}
                new = [tuple(conts[i][:k]) for k in range(1, len(conts[i]))]
            group.append(i)
            for p in new:
                nodes.setdefault(p, len(nodes))
        if nodes and not self._tree_pass(request, group, nodes, cache, n_prompt, interventions, values):
            return None
        return values

    def _tree_pass(self, request: ScoreRequest, group: list[int], nodes: dict[tuple[int, ...], int], cache: Any,
                   n_prompt: int, interventions: Interventions | None, values: list[list[float]]) -> bool:
        """One forward pass over the prefix tree `nodes` of the continuations `group`, appending to `values`."""
        dev = self.device
        order = list(nodes)
        q = len(order)
        allowed = torch.zeros((q, n_prompt + q), dtype=torch.bool, device=dev)
        allowed[:, :n_prompt] = True
        for i, prefix in enumerate(order):
            for k in range(1, len(prefix) + 1):
                allowed[i, n_prompt + nodes[prefix[:k]]] = True
        inputs = torch.tensor([[prefix[-1] for prefix in order]], device=dev)
        positions = torch.tensor([[n_prompt + len(prefix) - 1 for prefix in order]], device=dev)
        if interventions is not None:
            ones = torch.ones((1, q), dtype=torch.long, device=dev)
            interventions.set_step([0], prompt=torch.zeros_like(ones), response=ones)
        try:
            with interventions.hooks() if interventions is not None else nullcontext():
                logits = self.model(input_ids=inputs, attention_mask=allowed[None, None], position_ids=positions,
                                    use_cache=True, **with_cache(self.model, copy.deepcopy(cache))).logits
        except (RuntimeError, ValueError, TypeError):
            return False
        conts = [request.continuations[i] for i in group]
        rows = [nodes[tuple(c[:k])] for c in conts for k in range(1, len(c))]
        targets = [c[k] for c in conts for k in range(1, len(c))]
        got = _target_logprobs(logits[0], torch.tensor(rows, device=dev), torch.tensor(targets, device=dev))
        _extend(values, group, conts, got.tolist())
        return True

    def _score_rows(self, request: ScoreRequest, cache: Any, first: Any, n_prompt: int,
                    interventions: Interventions | None) -> list[list[float]]:
        """Each continuation's token log-probs, one batch row per continuation over a copy of the prompt's cache
        (any model); rows of similar length go together, as many as fit `SCORE_MEMORY_BYTES`."""
        dev = self.device
        conts = request.continuations
        values = [[float(first[c[0]])] for c in conts]
        per_token = cache_bytes(cache) / max(n_prompt, 1)
        vocab = first.shape[-1]
        todo = sorted((i for i, c in enumerate(conts) if len(c) > 1), key=lambda i: len(conts[i]))
        chunks: list[list[int]] = []
        for i in todo:  # ascending length: the newest row is the widest
            width = len(conts[i]) - 1
            if chunks and (len(chunks[-1]) + 1) * (per_token * (n_prompt + width) + 4 * vocab * width) \
                    <= SCORE_MEMORY_BYTES:
                chunks[-1].append(i)
            else:
                chunks.append([i])
        for rows in chunks:
            chunk = [conts[i] for i in rows]
            width = max(len(c) for c in chunk) - 1
            inputs = torch.full((len(rows), width), self.pad_id, device=dev)
            mask = torch.zeros((len(rows), width), dtype=torch.long, device=dev)
            for j, c in enumerate(chunk):
                inputs[j, :len(c) - 1] = torch.tensor(c[:-1], device=dev)
                mask[j, :len(c) - 1] = 1
            if interventions is not None:
                interventions.set_step([0] * len(rows), prompt=torch.zeros_like(mask), response=mask)
            with interventions.hooks() if interventions is not None else nullcontext():
                logits = continue_prompt(self.model, cache, n_prompt, inputs, mask).logits
            real = mask.reshape(-1).nonzero()[:, 0]  # row by row, each row's tokens in order
            targets = torch.tensor([t for c in chunk for t in c[1:]], device=dev)
            got = _target_logprobs(logits.reshape(-1, logits.shape[-1]), real, targets)
            _extend(values, rows, chunk, got.tolist())
            del logits
        return values

    def _score(self, request: ScoreRequest) -> ScoreResult:
        n_prompt = len(request.prompt_ids)
        cache, first, interventions = self._prompt_pass(request)
        multi_token = any(len(c) > 1 for c in request.continuations)
        if any(getattr(cache, "is_sliding", None) or []):
            # one 4D mask would serve sliding-window layers too, and a short first prompt (inside the window)
            # cannot reveal that: such models (Gemma 2/3, some Mistrals) always take the row pass
            self._tree_scoring = False
        if self._tree_scoring is None and multi_token:
            # first use: check the one-pass tree against the row-per-continuation pass on this very request
            tree = self._score_tree(request, cache, first, n_prompt, interventions)
            values = self._score_rows(request, cache, first, n_prompt, interventions)
            self._tree_scoring = tree is not None and all(abs(sum(a) - sum(b)) <= 1e-3 + 1e-5 * abs(sum(b))
                                                          for a, b in zip(tree, values, strict=True))
        elif self._tree_scoring:
            tree = self._score_tree(request, cache, first, n_prompt, interventions)
            if tree is None:
                raise RuntimeError("the model stopped accepting the tree attention mask it accepted before")
            values = tree
        else:
            values = self._score_rows(request, cache, first, n_prompt, interventions)
        scored = sum(len(c) for c in request.continuations)
        return ScoreResult(logprobs=[sum(v) for v in values], input_tokens=n_prompt, scored_tokens=scored,
                           token_logprobs=values)


def scoring_groups(requests: Sequence[ScoreRequest]) -> list[list[int]]:
    """Indices of the requests that share prompt ids and steering (each group can run as one pass), in order."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, r in enumerate(requests):
        steer = tuple((s.layer, s.coef, s.positions, s.op, s.vector.detach().cpu().numpy().tobytes())
                      for s in r.steer)
        groups.setdefault((tuple(r.prompt_ids), steer), []).append(i)
    return list(groups.values())


def merge_scoring(requests: Sequence[ScoreRequest]) -> ScoreRequest:
    """One request for all the continuations of requests that share a prompt and steering."""
    return ScoreRequest(prompt_ids=requests[0].prompt_ids, steer=requests[0].steer,
                        continuations=[c for r in requests for c in r.continuations])


def split_scoring(result: ScoreResult, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
    """Each request's part of a merged request's result (each counts the prompt as its own input)."""
    parts, start = [], 0
    for r in requests:
        end = start + len(r.continuations)
        parts.append(ScoreResult(logprobs=result.logprobs[start:end], input_tokens=result.input_tokens,
                                 scored_tokens=sum(len(c) for c in r.continuations),
                                 token_logprobs=result.token_logprobs[start:end]))
        start = end
    return parts


def _target_logprobs(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits[rows])[targets], one value per row, without a log-softmax over the whole block:
    the target logit minus the row's logsumexp, `LOGSUMEXP_BYTES` of float32 logits at a time."""
    step = max(1, LOGSUMEXP_BYTES // (4 * logits.shape[-1]))
    parts = []
    for start in range(0, len(rows), step):
        block = logits[rows[start:start + step]].float()
        parts.append(block.gather(-1, targets[start:start + step, None])[:, 0] - torch.logsumexp(block, dim=-1))
    return torch.cat(parts) if parts else logits.new_zeros(0, dtype=torch.float32)


def _extend(values: list[list[float]], indices: list[int], conts: list[list[int]], flat: list[float]) -> None:
    """Append to each continuation's values its own run of `flat` (len - 1 values each, in order)."""
    start = 0
    for i, c in zip(indices, conts, strict=True):
        values[i].extend(flat[start:start + len(c) - 1])
        start += len(c) - 1


def _byte_decoder(tokenizer: Any) -> dict[str, int] | None:
    """GPT-2's byte-to-unicode table when the tokenizer is byte-level BPE, else None."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:  # a slow tokenizer
        return None
    try:
        decoder = json.loads(backend.to_str()).get("decoder") or {}
    except Exception:  # noqa: BLE001 - slow tokenizers have no backend
        return None
    kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", []) or []}
    if "ByteLevel" not in kinds:
        return None
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


class _Batch:
    """One generation run: rows in one KV cache, each request with its own sampling, steering and monitors.

    Static (no `max_batch`): the requests given run together, and finished rows leave once they are half the
    batch. Continuous: at most `max_batch` rows; a finished row leaves at once (its result goes to `finish`)
    and the next waiting request (the rest of `requests`, then `poll(free slots)`) takes its slot between
    decode steps. Newcomers are prefilled together, then their cache joins the running one, the shorter of
    the two left-padded with masked zeros so every row keeps its own positions; leading columns no row
    attends to are cut, so the cache never holds more than `max_batch` rows of the longest live row.
    """

    def __init__(self, engine: Engine, requests: list[GenRequest], *, max_batch: int | None = None,
                 poll: Callable[[int], list[GenRequest]] | None = None,
                 finish: Callable[[int, GenResult], None] | None = None) -> None:
        self.e = engine
        self.continuous = max_batch is not None or poll is not None
        self.max_batch = max_batch or len(requests)
        self.waiting = list(requests)
        self.poll = poll
        self.finish = finish
        self.requests: list[GenRequest] = []  # every request admitted, in order: its index is its id
        self.generated: list[list[int]] = []
        self.fed: list[int] = []  # generated tokens fed back in (their positions seen by the model)
        self.done: list[bool] = []
        self.reason: list[StopReason] = []
        self.logprobs: list[list[TokenLogprob] | None] = []
        self.limits: list[int] = []
        self.generators: list[Any] = []
        self.warpers: list[Any] = []
        self.stop_criteria: list[Any] = []
        self.monitored: list[bool] = []
        self.streamed: list[int] = []  # tokens already handed to on_token
        self.kept: list[list[list[float]]] = []  # per request, per monitor: values from earlier Interventions
        self.results: list[GenResult | None] = []
        self.slots: list[int] = []  # the request in each batch row
        self.cache: Any = None
        self.mask: Any = None  # [rows, cache columns + 1 while feeding]: which columns each row attends to
        self.next_pos: Any = None
        self.tokens: Any = None  # each row's next input token
        self.interventions: Interventions | None = None
        self.iv_rows: dict[int, int] = {}  # request -> its row in `interventions`

    def _add(self, r: GenRequest) -> int:
        if not r.prompt_ids:
            raise ValueError("empty prompt")
        e = self.e
        limit = r.max_new_tokens
        if e.max_length is not None:
            limit = min(limit, max(e.max_length - len(r.prompt_ids), 0))
        generator = None
        if r.temperature > 0:
            generator = torch.Generator(device=e.device)
            generator.manual_seed(r.seed if r.seed is not None else random.SystemRandom().randrange(2**63))
        self.requests.append(r)
        self.generated.append([])
        self.fed.append(0)
        self.done.append(False)
        self.reason.append("max_tokens")
        self.logprobs.append([] if r.logprobs else None)
        self.limits.append(limit)
        self.generators.append(generator)
        self.warpers.append(_warpers(r))
        self.stop_criteria.append(e.stop_criteria(r.stop_seqs) if r.stop_seqs else None)
        self.monitored.append(bool(r.monitor))
        self.streamed.append(0)
        self.kept.append([[] for _ in r.monitor])
        self.results.append(None)
        return len(self.requests) - 1

    def _text_tokens(self, i: int) -> list[int]:
        ids = self.generated[i]
        return ids[:-1] if ids and ids[-1] in self.e.stop_ids else ids

    def _complete(self, i: int) -> bool:
        """Finished, and (if monitored) every text token has been fed so its position was recorded."""
        return self.done[i] and (not self.monitored[i] or self.fed[i] >= len(self._text_tokens(i)))

    def run(self) -> list[GenResult]:
        self._admit(self._take(self.max_batch))
        while self.slots:
            self._retire()
            self._admit(self._take(self.max_batch - len(self.slots)))
            if not self.slots:
                break
            if all(self.done[i] for i in self.slots):
                self._feed_last()
                self._retire(everyone=True)
                continue
            self._decode()
        results = [r for r in self.results if r is not None]
        assert len(results) == len(self.requests)  # every admitted row ran until it retired
        return results

    def _take(self, n: int) -> list[GenRequest]:
        """Up to n requests for free slots: those given first, then polled ones."""
        if n <= 0 or not _mergeable(self.cache):  # such a cache runs its rows to the end first
            return []
        taken, self.waiting = self.waiting[:n], self.waiting[n:]
        if len(taken) < n and self.poll is not None:
            taken += self.poll(n - len(taken))
        return taken

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        model = self.e.model
        with self.interventions.hooks() if self.interventions is not None else nullcontext():
            return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **(with_cache(model, cache) if cache is not None else {}))

    def _admit(self, new: list[GenRequest]) -> None:
        """Prefill the newcomers together, sample their first tokens, and join their cache to the running one."""
        if not new:
            return
        e, dev = self.e, self.e.device
        added = [self._add(r) for r in new]
        width = max(len(r.prompt_ids) for r in new)
        ids = torch.full((len(new), width), e.pad_id, dtype=torch.long, device=dev)
        mask = torch.zeros((len(new), width), dtype=torch.long, device=dev)
        for b, r in enumerate(new):
            ids[b, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids, device=dev)
            mask[b, width - len(r.prompt_ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        self._interventions(self.slots + added)
        if self.interventions is not None:
            last = torch.zeros_like(mask)
            last[:, -1] = 1
            self.interventions.set_step([self.iv_rows[i] for i in added], prompt=mask, response=last)
        out = self._forward(ids, mask, positions, None)
        for i in added:
            if self.limits[i] == 0:
                self.done[i], self.reason[i] = True, "model_length"
        tokens = self._sample(out.logits[:, -1, :], added)
        cache, next_pos = returned_cache(out), positions[:, -1] + 1
        if self.cache is None:
            self.cache, self.mask, self.next_pos, self.tokens = cache, mask, next_pos, tokens
        else:
            columns = max(self.mask.shape[1], width)
            for old, joined in zip(self.cache.layers, cache.layers, strict=True):
                old.keys = torch.cat([_pad_left(old.keys, columns, -2), _pad_left(joined.keys, columns, -2)])
                old.values = torch.cat([_pad_left(old.values, columns, -2), _pad_left(joined.values, columns, -2)])
            self.mask = torch.cat([_pad_left(self.mask, columns, -1), _pad_left(mask, columns, -1)])
            self.next_pos = torch.cat([self.next_pos, next_pos])
            self.tokens = torch.cat([self.tokens, tokens])
        self.slots += added
        self.e.peak_cache = (max(self.e.peak_cache[0], len(self.slots)), max(self.e.peak_cache[1], self.mask.shape[1]))

    def _interventions(self, members: list[int]) -> None:
        """Hooks for these rows: the current ones' values so far are kept, and a new set is built."""
        iv = self.interventions
        if iv is not None and iv.monitoring:
            current = iv.monitor_values()
            for i in self.slots:
                for kept, values in zip(self.kept[i], current[self.iv_rows[i]], strict=True):
                    kept.extend(values)
        self.interventions, self.iv_rows = None, {}
        if any(self.requests[i].steer or self.requests[i].monitor for i in members):
            self.interventions = Interventions(self.e.layers, [self.requests[i].steer for i in members],
                                               [self.requests[i].monitor for i in members],
                                               device=self.e.device, dtype=self.e.dtype)
            self.iv_rows = {i: p for p, i in enumerate(members)}

    def _retire(self, everyone: bool = False) -> None:
        """Hand over complete rows' results and drop them from the cache (static: once they are half the batch,
        as an index copy of the cache is not free)."""
        gone = [b for b, i in enumerate(self.slots) if everyone or self._complete(i)]
        if not gone or (not self.continuous and len(gone) * 2 < len(self.slots)):
            return
        self._stream()
        for b in gone:
            i = self.slots[b]
            self.results[i] = result = self._result(i)
            if self.finish is not None:
                self.finish(i, result)
        keep = [b for b in range(len(self.slots)) if b not in set(gone)]
        if not keep:
            self.slots, self.cache = [], None
            return
        index = torch.tensor(keep, device=self.e.device)
        self.cache.batch_select_indices(index)
        self.slots = [self.slots[b] for b in keep]
        self.mask, self.next_pos, self.tokens = self.mask[index], self.next_pos[index], self.tokens[index]
        cut = int(self.mask.any(0).nonzero()[0])  # leading columns no row attends to
        if self.continuous and cut and _mergeable(self.cache):
            self.mask = self.mask[:, cut:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, cut:], layer.values[:, :, cut:]

    def _decode(self) -> None:
        """Feed every row its next token and sample the one after."""
        dev = self.e.device
        self.mask = torch.cat([self.mask, torch.ones((len(self.slots), 1), dtype=self.mask.dtype, device=dev)], 1)
        for i in self.slots:
            if self.fed[i] < len(self.generated[i]):
                self.fed[i] += 1
        if self.interventions is not None:
            one = torch.ones((len(self.slots), 1), dtype=torch.long, device=dev)
            self.interventions.set_step([self.iv_rows[i] for i in self.slots], prompt=torch.zeros_like(one),
                                        response=one)
        out = self._forward(self.tokens[:, None], self.mask, self.next_pos[:, None], self.cache)
        self.cache = returned_cache(out)
        self.next_pos = self.next_pos + 1
        self._stream()
        self.tokens = self._sample(out.logits[:, -1, :], self.slots)

    def _values(self, i: int, current: list[list[list[float]]] | None) -> list[list[float]]:
        """Request i's monitor values so far: those kept from earlier Interventions, then the current one's."""
        row = self.iv_rows.get(i)
        if row is None or not current or not current[row]:
            return self.kept[i]
        return [kept + now for kept, now in zip(self.kept[i], current[row], strict=True)]

    def _stream(self) -> None:
        """Hand each streaming row the tokens whose projections are now known."""
        streaming = [i for i in self.slots if self.requests[i].on_token is not None]
        if not streaming:
            return
        current = self.interventions.monitor_values() if self.interventions is not None else None
        for i in streaming:
            r, text_ids = self.requests[i], self._text_tokens(i)
            on_token = r.on_token
            assert on_token is not None  # `streaming` holds the requests that stream
            values = self._values(i, current) if r.monitor else None
            known = len(text_ids)
            if values is not None:
                known = min(known, len(values[0]) - 1)  # values[0] is the last prompt token
            elif not self.done[i]:
                known = min(known, self.fed[i])
            for k in range(self.streamed[i], known):
                on_token(self.e.token_text(text_ids[k]), values[0][k + 1] if values is not None else None)
            self.streamed[i] = max(self.streamed[i], known)

    def _feed_last(self) -> None:
        """Feed each row's last token once more so monitors see its position (stops at the deepest monitor).

        The cache is left part-written: every row retires right after."""
        iv = self.interventions
        assert iv is not None
        dev = self.e.device
        rows = len(self.slots)
        mask = torch.cat([self.mask, torch.ones((rows, 1), dtype=self.mask.dtype, device=dev)], dim=1)
        for i in self.slots:
            if self.fed[i] < len(self.generated[i]):
                self.fed[i] += 1
        one = torch.ones((rows, 1), dtype=torch.long, device=dev)
        iv.set_step([self.iv_rows[i] for i in self.slots], prompt=torch.zeros_like(one), response=one)
        iv.stop_after = iv.monitor_depth
        try:
            with iv.hooks():
                self.e.model(input_ids=self.tokens[:, None], attention_mask=mask,
                             position_ids=self.next_pos[:, None], use_cache=True, logits_to_keep=1,
                             **with_cache(self.e.model, self.cache))
        except StopForward:
            pass
        finally:
            iv.stop_after = None

    def _sample(self, logits: Any, rows: list[int]) -> Any:
        """Pick each row's next token, record logprobs, update stop state; finished rows repeat their last token."""
        logits = logits.float()
        tokens = logits.argmax(-1)
        want_lp = [b for b, i in enumerate(rows) if self.logprobs[i] is not None and not self.done[i]]
        logp = torch.log_softmax(logits, dim=-1) if want_lp else None
        no_ids = logits.new_empty((1, 0), dtype=torch.long)  # temperature, top-k and top-p read only the scores
        for b, i in enumerate(rows):
            warpers = self.warpers[i]
            if self.done[i] or warpers is None:
                continue
            probs = warpers(no_ids, logits[b:b + 1]).softmax(-1)
            tokens[b] = torch.multinomial(probs, 1, generator=self.generators[i])[0, 0]
        chosen = tokens.tolist()
        out = []
        for b, i in enumerate(rows):
            if self.done[i]:
                out.append(self.generated[i][-1] if self.generated[i] else self.e.pad_id)
                continue
            tok = chosen[b]
            self.generated[i].append(tok)
            out.append(tok)
            row_logprobs = self.logprobs[i]
            if logp is not None and row_logprobs is not None:
                k = max(self.requests[i].top_logprobs or 0, 0)
                top: list[tuple[int, float]] = []
                if k:
                    vals, idx = logp[b].topk(k)
                    top = list(zip(idx.tolist(), vals.tolist(), strict=True))
                row_logprobs.append(TokenLogprob(tok, float(logp[b, tok]), top))
            if tok in self.e.stop_ids:
                self.done[i], self.reason[i] = True, "stop"
            elif self._hit_stop_seq(i):
                self.done[i], self.reason[i] = True, "stop"
            elif len(self.generated[i]) >= self.limits[i]:
                self.done[i] = True
                self.reason[i] = "max_tokens" if self.limits[i] >= self.requests[i].max_new_tokens else "model_length"
        return torch.tensor(out, dtype=torch.long, device=logits.device)

    def _hit_stop_seq(self, i: int) -> bool:
        """Whether a stop string has just appeared (the criteria matches those that end inside the last token)."""
        criteria = self.stop_criteria[i]
        if criteria is None:
            return False
        tail = self.generated[i][-criteria.maximum_token_len:]  # all the criteria reads
        return bool(criteria(torch.tensor([tail]), None)[0])

    def _result(self, i: int) -> GenResult:
        r = self.requests[i]
        text_ids = self._text_tokens(i)
        text = self.e.tokenizer.decode(text_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if r.stop_seqs:
            cuts = [text.find(s) for s in r.stop_seqs if s in text]
            if cuts:
                text = text[:min(cuts)]
        monitor = None
        if r.monitor:
            values = self._values(i, self.interventions.monitor_values() if self.interventions is not None else None)
            tokens = [self.e.token_text(t) for t in text_ids]
            monitor = []
            for spec, vals in zip(r.monitor, values, strict=True):
                projections = vals[1:1 + len(text_ids)]
                monitor.append({
                    "layer": spec.layer,
                    "vector": spec.label,
                    "kind": spec.kind,
                    "tokens": tokens,
                    "projections": projections,
                    "prompt_last": vals[0] if vals else None,
                    "response_mean": statistics.fmean(projections) if projections else None,
                })
        return GenResult(
            token_ids=list(self.generated[i]),
            text=text,
            stop_reason=self.reason[i],
            input_tokens=len(r.prompt_ids),
            output_tokens=len(self.generated[i]),
            logprobs=self.logprobs[i],
            monitor=monitor,
        )


def _mergeable(cache: Any) -> bool:
    """Whether a KV cache is plain per-layer key and value tensors that rows can join and columns leave
    (not sliding-window or recurrent state, whose layers keep their own counters)."""
    if cache is None:
        return True
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`t` with zeros before its entries along `dim` up to `width` (masked columns, in a cache or its mask)."""
    missing = width - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _warpers(request: GenRequest) -> Any:
    """transformers' sampling warpers for one request, in `generate`'s order (temperature, top-k, top-p);
    None for greedy. A top_k of 0 or a top_p outside (0, 1) leaves that filter off."""
    if request.temperature <= 0:
        return None
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList([TemperatureLogitsWarper(float(request.temperature))])
    if request.top_k is not None and request.top_k > 0:
        warpers.append(TopKLogitsWarper(request.top_k))
    if request.top_p is not None and 0 < request.top_p < 1:
        warpers.append(TopPLogitsWarper(request.top_p))
    return warpers
