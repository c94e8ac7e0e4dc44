"""Find the decoder blocks of a causal LM, and say which module carries each hidden-states layer.

Persona vectors are indexed like `output_hidden_states`: layer 0 is the input of the first decoder block
(the embeddings), layer l (1 <= l < L) is the output of block l-1, and layer L is the output of the final
norm (transformers replaces the last hidden state with the normed one). Steering and monitoring hook the
module that produces each layer, so one convention holds for extraction, steering and monitoring.
Architectures differ only in where the blocks live; `find_layers` knows the usual places and fails
clearly for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pv_harness.errors import PvError

# Where the decoder blocks live, relative to the *ForCausalLM / *ForConditionalGeneration model.
BLOCK_PATHS = (
    "model.layers",  # Llama, Qwen2/3, Mistral, Gemma 2/3 text, Phi-3, OLMo ...
    "model.language_model.layers",  # Gemma 3 (and other) multimodal models in transformers 5
    "model.language_model.model.layers",
    "language_model.model.layers",  # older multimodal layout
    "language_model.layers",
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "model.decoder.layers",  # OPT
    "layers",  # a bare base model
)
NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_norm", "norm_f")


class LayerDiscoveryError(ValueError, PvError):
    """The model's decoder blocks could not be found."""


@dataclass(frozen=True)
class ModelLayers:
    """The decoder blocks of a model and the module after them (None when there is no final norm)."""

    blocks: Any  # torch.nn.ModuleList
    final_norm: Any | None
    path: str

    @property
    def num_layers(self) -> int:
        """Number of decoder blocks L; hidden-states layers run 0..L."""
        return len(self.blocks)


def _get(obj: Any, dotted: str) -> Any | None:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_layers(model: Any) -> ModelLayers:
    """Locate the decoder blocks (and final norm) of a transformers causal LM."""
    import torch

    for path in BLOCK_PATHS:
        blocks = _get(model, path)
        if isinstance(blocks, torch.nn.ModuleList) and len(blocks) > 0:
            parent = _get(model, path.rsplit(".", 1)[0]) if "." in path else model
            norm = next((getattr(parent, n) for n in NORM_NAMES if isinstance(getattr(parent, n, None),
                                                                              torch.nn.Module)), None)
            return ModelLayers(blocks=blocks, final_norm=norm, path=path)
    kind = type(model).__name__
    raise LayerDiscoveryError(
        f"cannot find the decoder blocks of {kind}: looked for {', '.join(BLOCK_PATHS)}. "
        "Supported: Llama, Qwen2/3, Mistral, Gemma 2/3, GPT-2 and GPT-NeoX style models."
    )


def check_layer(layer: int, num_layers: int) -> int:
    """Validate a hidden-states layer index (0 = embeddings .. L = last block, normed)."""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise ValueError(f"layer must be an integer, got {layer!r}")
    if not 0 <= layer <= num_layers:
        raise ValueError(f"layer {layer} is out of range: this model has hidden-states layers 0..{num_layers} "
                         f"(0 = embeddings, l = output of the l-th decoder block, {num_layers} = the last, normed)")
    return layer
