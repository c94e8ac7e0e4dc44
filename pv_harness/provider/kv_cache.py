"""A prompt's KV cache, continued by a batch of rows, across transformers versions.

The engine scores judge continuations this way and extraction runs the n answers to one prompt this
way: the prompt runs once (batch 1), then each batch of right-padded rows continues a copy of its cache.
transformers renamed the cache argument `past_key_values` to `cache` (the old name is deprecated, to be
removed in 5.40), so the name is read off the model's own `forward` signature. `PromptCaches` keeps recent
prompts' caches, so a judge that scores many answers to one prompt, one request at a time, runs it once.
"""

from __future__ import annotations

import copy
import functools
import inspect
import threading
from collections import OrderedDict
from typing import Any

import torch


@functools.cache
def _cache_argument(cls: type[torch.nn.Module]) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def with_cache(model: Any, cache: Any) -> dict[str, Any]:
    """Keyword arguments that hand `cache` to `model`'s forward under the name its version expects."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
    return {_cache_argument(base.__class__): cache}


def returned_cache(output: Any) -> Any:
    """The KV cache a forward pass returned (`cache` in new transformers, `past_key_values` before)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def continue_prompt(model: Any, cache: Any, prompt_length: int, ids: torch.Tensor, mask: torch.Tensor,
                    **forward: Any) -> Any:
    """Run right-padded rows `ids` ([B, T]; `mask` marks real tokens) after a batch-1 prompt's `cache`.

    The rows continue a deep copy, so the prompt's cache stays clean for the next batch. Right padding
    keeps every real token's position and keys exactly those of the unpadded conversation.
    """
    rows, width = ids.shape
    continued = copy.deepcopy(cache)
    if rows > 1:
        continued.batch_repeat_interleave(rows)
    attention = torch.cat([torch.ones((rows, prompt_length), dtype=mask.dtype, device=mask.device), mask], dim=1)
    positions = (prompt_length + torch.arange(width, device=ids.device)).expand(rows, -1)
    return model(input_ids=ids, attention_mask=attention, position_ids=positions, use_cache=True,
                 **with_cache(model, continued), **forward)


def cache_bytes(cache: Any) -> int:
    """Bytes held by a KV cache's key and value tensors."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            t = getattr(layer, name, None)
            if t is not None and hasattr(t, "element_size"):
                total += t.numel() * t.element_size()
    return total


class PromptCaches:
    """Recent prompts' KV caches and next-token log-probs, keyed by token ids, bounded in bytes (LRU).

    An entry is shared by every later request for its prompt: continue a copy (`continue_prompt` does),
    never the entry itself, which a forward pass would grow in place. Valid while the model's weights stay
    as they were (as prepacking already assumes).
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[int, ...], tuple[Any, torch.Tensor, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, prompt_ids: list[int]) -> tuple[Any, torch.Tensor] | None:
        """(cache, next-token log-probs) of this prompt, if kept."""
        with self._lock:
            entry = self._entries.get(tuple(prompt_ids))
            if entry is None:
                return None
            self._entries.move_to_end(tuple(prompt_ids))
            return entry[0], entry[1]

    def put(self, prompt_ids: list[int], cache: Any, first: torch.Tensor) -> None:
        """Keep this prompt's cache, dropping the least recently used ones beyond `max_bytes`."""
        size = cache_bytes(cache) + first.numel() * first.element_size()
        key = tuple(prompt_ids)
        with self._lock:
            if size > self.max_bytes or key in self._entries:
                return
            self._entries[key] = (cache, first, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def clear(self) -> None:
        """Drop every entry (after changing the model's weights; or to time a cold start)."""
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)
