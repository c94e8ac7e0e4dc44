"""A prompt's KV cache, continued by a batch of rows, across transformers versions.

The engine scores judge continuations this way and extraction runs the n answers to one prompt this
way: the prompt runs once (batch 1), then each batch of right-padded rows continues a copy of its cache.
transformers renamed the cache argument `past_key_values` to `cache` (the old name is deprecated, to be
removed in 5.40), so the name is read off the model's own `forward` signature.
"""

from __future__ import annotations

import copy
import functools
import inspect
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
