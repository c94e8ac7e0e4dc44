"""Pooled hidden states of conversations, the raw material of persona vectors.

For each conversation (chat-templated prompt + the answer the model gave) and each layer of the
hidden-states convention (0 = embeddings, l = output of decoder block l), we pool three views:
the mean over answer tokens, the mean over prompt tokens, and the last prompt token. The prompt/
answer boundary comes from one tokenisation of the whole text (character offsets), so it cannot
shift by a token the way tokenising prompt and prompt+answer separately can.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

KINDS = ("response_avg", "prompt_avg", "prompt_last")
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


def encode(tokenizer, prompt: str, answer: str) -> Encoded:
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


def _batches(items: Sequence[Encoded], batch_size: int, max_tokens: int) -> Iterator[list[int]]:
    """Indices grouped by similar length (less padding), capped in sequences and in padded tokens."""
    order = sorted(range(len(items)), key=lambda i: len(items[i].input_ids))
    batch: list[int] = []
    for i in order:
        longest = len(items[i].input_ids)  # sorted ascending: the newcomer is the longest
        if batch and (len(batch) >= batch_size or longest * (len(batch) + 1) > max_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@torch.inference_mode()
def pool(
    model,
    items: Sequence[Encoded],
    *,
    pad_token_id: int,
    batch_size: int = 8,
    max_batch_tokens: int = 8192,
    progress=None,
) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Yield (indices, {kind: [B, num_layers + 1, hidden] float32}) batch by batch.

    Padding is on the right and every mean uses the attention mask, so a sample pools to the same
    values whatever it is batched with. Callers fold each batch into running sums, so memory does
    not grow with the number of samples.
    """
    device = next(model.parameters()).device
    body = getattr(model, "base_model", model)  # the decoder without the LM head: no logits to compute
    for indices in _batches(items, batch_size, max_batch_tokens):
        batch = [items[i] for i in indices]
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, e in enumerate(batch):
            ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
            mask[row, : len(e.input_ids)] = 1
        out = body(input_ids=ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                   use_cache=False)
        hidden = torch.stack(out.hidden_states, dim=1).float()  # [B, L+1, T, H]
        positions = torch.arange(width).unsqueeze(0)
        lengths = mask.sum(1, keepdim=True)
        starts = torch.tensor([[e.boundary] for e in batch])
        answer_mask = ((positions >= starts) & (positions < lengths)).to(hidden)
        prompt_mask = (positions < starts).to(hidden)
        answer_mask, prompt_mask = answer_mask.to(hidden.device), prompt_mask.to(hidden.device)
        pooled = {
            "response_avg": torch.einsum("blth,bt->blh", hidden, answer_mask) / answer_mask.sum(1)[:, None, None],
            "prompt_avg": torch.einsum("blth,bt->blh", hidden, prompt_mask) / prompt_mask.sum(1)[:, None, None],
            "prompt_last": hidden[torch.arange(len(batch)), :, starts.squeeze(1) - 1],
        }
        if progress is not None:
            progress(len(batch))
        yield indices, {k: v.cpu() for k, v in pooled.items()}
