"""Pooled hidden states of conversations, the raw material of persona vectors.

For each conversation (chat-templated prompt + the answer the model gave) and each layer of the
hidden-states convention (0 = embeddings, l = output of decoder block l), we pool three views:
the mean over answer tokens, the mean over prompt tokens, and the last prompt token. The prompt/
answer boundary comes from one tokenisation of the whole text (character offsets), so it cannot
shift by a token the way tokenising prompt and prompt+answer separately can.

Shared tokens run once: conversations with the same prompt run it once and continue its KV cache for
each answer; conversations whose prompts share a long token prefix (the chat template and persona
system prompt before different questions) run that prefix once and continue its cache for each
member's own prompt tokens and answer. Every view pools over the same tokens as running each whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from pv_harness.provider.kv_cache import continue_prompt, returned_cache

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

KINDS = ("response_avg", "prompt_avg", "prompt_last")
MIN_PREFIX = 16  # the fewest tokens a shared prefix needs to get a pass of its own (a guess, not tuned)
LAYER_CONVENTION = (
    "hidden_states: index 0 = token embeddings, index l = output of decoder block l "
    "(the last index is after the final norm), as in transformers' output_hidden_states"
)


@dataclass(frozen=True)
class Encoded:
    """One tokenised conversation and where its answer starts."""

    input_ids: list[int]
    boundary: int  # index of the first answer token; prompt tokens are [0, boundary)

    def __post_init__(self) -> None:
        if not 0 < self.boundary < len(self.input_ids):
            raise ValueError("a conversation needs at least one prompt token and one answer token")


def encode(tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str) -> Encoded:
    """Tokenise prompt+answer once and find the first token that holds answer characters."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("pooling needs a fast tokenizer (character offsets) to find the prompt/answer boundary")
    enc = tokenizer(prompt + answer, add_special_tokens=False, return_offsets_mapping=True)
    cut = len(prompt)
    boundary = next(
        (i for i, (start, end) in enumerate(enc["offset_mapping"]) if end > cut and end > start),
        len(enc["input_ids"]),
    )
    return Encoded(list(enc["input_ids"]), boundary)


def _batches(lengths: Sequence[int], order: Sequence[int], batch_size: int, max_tokens: int) -> Iterator[list[int]]:
    """The indices `order`, grouped by similar length (less padding), capped in rows and in padded tokens."""
    batch: list[int] = []
    for i in sorted(order, key=lambda i: lengths[i]):
        # sorted ascending: the newcomer is the longest
        if batch and (len(batch) >= batch_size or lengths[i] * (len(batch) + 1) > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _right_padded(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids and attention mask, padded on the right to the longest row."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, tokens in enumerate(rows):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
    return ids, mask


def prefix_groups(prompts: Sequence[Sequence[int]], min_prefix: int = MIN_PREFIX) -> list[tuple[int, list[int]]]:
    """(shared prefix length, indices into `prompts`) for groups of distinct prompts that share >= `min_prefix` tokens.

    Sorted prompts put those with a common prefix side by side; neighbours join a group while the group's
    common prefix stays >= `min_prefix`. The prefix stops short of every member's whole prompt, so each member
    has at least one prompt token of its own (its last prompt token's state comes from its own pass).
    Prompts in no group are left out.
    """
    groups: list[tuple[int, list[int]]] = []
    shared = 0
    members: list[int] = []
    for i in sorted(range(len(prompts)), key=lambda i: tuple(prompts[i])):
        prompt = prompts[i]
        if members:
            previous = prompts[members[-1]]
            common = next((k for k, (a, b) in enumerate(zip(previous, prompt, strict=False)) if a != b),
                          min(len(previous), len(prompt)))
            joined = min(shared, common, len(prompt) - 1)
            if joined >= min_prefix:
                shared = joined
                members.append(i)
                continue
            if len(members) > 1:
                groups.append((shared, members))
        shared, members = len(prompt) - 1, [i]
    if len(members) > 1:
        groups.append((shared, members))
    return groups


def _weighted_sums(hidden_states: Sequence[torch.Tensor], weights: torch.Tensor) -> torch.Tensor:
    """[B, layers, H] float32: per layer, the sum over positions of the hidden states times `weights` ([B, T]).

    One layer at a time, so no [B, layers, T, H] copy of the hidden states is ever made.
    """
    weights = weights.to(hidden_states[0].device, torch.float32)
    return torch.stack([torch.einsum("bth,bt->bh", h.float(), weights) for h in hidden_states], dim=1)


def _means(hidden_states: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """[B, layers, H] float32: per layer, the mean over the positions `mask` ([B, T], 0/1) selects."""
    weights = mask.to(torch.float32)
    return _weighted_sums(hidden_states, weights / weights.sum(1, keepdim=True))


def _lasts(hidden_states: Sequence[torch.Tensor], positions: torch.Tensor) -> torch.Tensor:
    """[B, layers, H] float32: per row, the hidden state at `positions[row]`."""
    rows = torch.arange(len(positions), device=hidden_states[0].device)
    positions = positions.to(hidden_states[0].device)
    return torch.stack([h[rows, positions].float() for h in hidden_states], dim=1)


@torch.inference_mode()
def pool(
    model: torch.nn.Module,
    items: Sequence[Encoded],
    *,
    pad_token_id: int,
    batch_size: int = 8,
    max_batch_tokens: int = 8192,
    progress: Callable[[int], None] | None = None,
    min_prefix: int = MIN_PREFIX,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Yield (indices, {kind: [B, num_layers + 1, hidden] float32}) batch by batch.

    Conversations that share their prompt tokens (a collection samples n answers per question and
    instruction) run that prompt once: its hidden states give the prompt views of all of them, and its
    KV cache starts each answer's pass. Conversations with a prompt of their own whose prompts share a
    token prefix of at least `min_prefix` tokens (`prefix_groups`) run that prefix once and each member's
    own prompt tokens and answer over its KV cache; the rest run whole, batched by length. Padding is on
    the right and every mean uses the attention mask, so a sample pools to the same values (up to float
    summation order) whatever it is batched or shares a prompt or prefix with.
    Callers fold each batch into running sums, so memory does not grow with the number of samples.
    """
    body = getattr(model, "base_model", model)  # the decoder without the LM head: no logits to compute
    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, e in enumerate(items):
        by_prompt.setdefault(tuple(e.input_ids[: e.boundary]), []).append(i)
    alone = [group[0] for group in by_prompt.values() if len(group) == 1]
    groups = prefix_groups([items[i].input_ids[: items[i].boundary] for i in alone], min_prefix)
    grouped = {j for _, members in groups for j in members}
    whole = [i for j, i in enumerate(alone) if j not in grouped]
    lengths = [len(e.input_ids) for e in items]
    for indices in _batches(lengths, whole, batch_size, max_batch_tokens):
        yield indices, _pool_whole(body, [items[i] for i in indices], pad_token_id)
        if progress is not None:
            progress(len(indices))
    for shared, members in groups:
        group = [alone[j] for j in members]
        for indices, pooled in _pool_prefixed(body, shared, [items[i] for i in group], pad_token_id,
                                              batch_size, max_batch_tokens):
            yield [group[j] for j in indices], pooled
            if progress is not None:
                progress(len(indices))
    for prompt, group in by_prompt.items():
        if len(group) == 1:
            continue
        for indices, pooled in _pool_shared(body, prompt, [items[i] for i in group], pad_token_id,
                                            batch_size, max_batch_tokens):
            yield [group[j] for j in indices], pooled
            if progress is not None:
                progress(len(indices))


def _pool_whole(body: torch.nn.Module, batch: Sequence[Encoded], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pool conversations run whole, side by side."""
    device = next(body.parameters()).device
    ids, mask = _right_padded([e.input_ids for e in batch], pad_token_id)
    out = body(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True, use_cache=False)
    positions = torch.arange(ids.shape[1]).unsqueeze(0)
    starts = torch.tensor([[e.boundary] for e in batch])
    pooled = {
        "response_avg": _means(out.hidden_states, (positions >= starts) & mask.bool()),
        "prompt_avg": _means(out.hidden_states, positions < starts),
        "prompt_last": _lasts(out.hidden_states, starts[:, 0] - 1),
    }
    return {k: v.cpu() for k, v in pooled.items()}


def _pool_shared(body: torch.nn.Module, prompt: tuple[int, ...], group: Sequence[Encoded], pad_token_id: int,
                 batch_size: int, max_batch_tokens: int) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Pool conversations with the same prompt tokens: the prompt once, then the answers over its KV cache."""
    device = next(body.parameters()).device
    n = len(prompt)
    out = body(input_ids=torch.tensor([prompt], device=device), output_hidden_states=True, use_cache=True)
    cache = returned_cache(out)
    prompt_avg = _means(out.hidden_states, torch.ones((1, n))).cpu()
    prompt_last = _lasts(out.hidden_states, torch.tensor([n - 1])).cpu()
    del out
    answers = [e.input_ids[n:] for e in group]
    lengths = [n + len(a) for a in answers]  # the prompt's keys count against the batch's token budget
    for indices in _batches(lengths, range(len(group)), batch_size, max_batch_tokens):
        ids, mask = _right_padded([answers[i] for i in indices], pad_token_id)
        rows = len(indices)
        out = continue_prompt(body, cache, n, ids.to(device), mask.to(device), output_hidden_states=True)
        pooled = {
            "response_avg": _means(out.hidden_states, mask).cpu(),
            "prompt_avg": prompt_avg.expand(rows, -1, -1).clone(),
            "prompt_last": prompt_last.expand(rows, -1, -1).clone(),
        }
        del out
        yield indices, pooled


def _pool_prefixed(body: torch.nn.Module, shared: int, group: Sequence[Encoded], pad_token_id: int,
                   batch_size: int, max_batch_tokens: int) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Pool conversations whose first `shared` tokens agree: those once, then each rest over their KV cache.

    The prompt mean adds the prefix's sum of states to the member's own prompt tokens' sum, over the whole
    prompt length, so it is the mean over all prompt tokens as if the conversation ran whole.
    """
    device = next(body.parameters()).device
    out = body(input_ids=torch.tensor([group[0].input_ids[:shared]], device=device), output_hidden_states=True,
               use_cache=True)
    cache = returned_cache(out)
    prefix_sums = _weighted_sums(out.hidden_states, torch.ones((1, shared))).cpu()
    del out
    rests = [e.input_ids[shared:] for e in group]
    lengths = [shared + len(r) for r in rests]  # the prefix's keys count against the batch's token budget
    for indices in _batches(lengths, range(len(group)), batch_size, max_batch_tokens):
        ids, mask = _right_padded([rests[i] for i in indices], pad_token_id)
        out = continue_prompt(body, cache, shared, ids.to(device), mask.to(device), output_hidden_states=True)
        positions = torch.arange(ids.shape[1]).unsqueeze(0)
        own = torch.tensor([[group[i].boundary - shared] for i in indices])  # own prompt tokens: [0, own)
        prompt_lengths = torch.tensor([[group[i].boundary] for i in indices], dtype=torch.float32)
        own_prompt = _weighted_sums(out.hidden_states, (positions < own) / prompt_lengths).cpu()
        pooled = {
            "response_avg": _means(out.hidden_states, (positions >= own) & mask.bool()).cpu(),
            "prompt_avg": own_prompt + prefix_sums / prompt_lengths.unsqueeze(-1),
            "prompt_last": _lasts(out.hidden_states, own[:, 0] - 1).cpu(),
        }
        del out
        yield indices, pooled
