"""`PersonaVector`: one persona vector as a Python object, with a row per hidden-states layer.

The command line and the `pv/` provider pass vectors around as files; from Python a researcher wants the
object: load it, take a layer's unit direction, project activations on it, combine vectors
(`evil - 0.5 * sycophantic`), and steer any transformers model inside a `with` block. Rows follow the
hidden-states convention of `pv_harness.provider.layers` (row 0 = embeddings, row l = output of block l).
Steering reuses the provider's hooks (`pv_harness.provider.interventions`), so a steered plain model
computes what `pv/` computes for the same request.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from pv_harness.provider.interventions import OPS, POSITIONS, Interventions, Op, Positions, SteerSpec
from pv_harness.provider.layers import check_layer, find_layers
from pv_harness.vectors.files import DEFAULT_KIND, VectorError, VectorFile, check_vector, read_any, save_vectors

# metadata that still describes a vector after arithmetic (counts, thresholds and norms no longer do)
IDENTITY_KEYS = ("model", "trait", "layer_convention")


class PersonaVector:
    """A `[layers+1, hidden]` float32 tensor of one kind (`response_avg_diff` by default) and its metadata."""

    def __init__(self, rows: torch.Tensor, metadata: dict[str, Any] | None = None, kind: str = DEFAULT_KIND) -> None:
        if rows.ndim != 2:
            raise VectorError(f"a PersonaVector needs one row per layer, [layers+1, hidden]; got shape "
                              f"{tuple(rows.shape)}")
        if not torch.isfinite(rows).all():
            raise VectorError("a PersonaVector cannot hold NaN or infinite values")
        self.rows = rows.detach().to(torch.float32)
        self.metadata = dict(metadata or {})
        self.kind = kind

    # ---- files ---------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str], kind: str | None = None) -> PersonaVector:
        """One kind from our safetensors file, or the paper's `.pt`.

        `kind` None takes `response_avg_diff` (the one steering uses), or a file's only tensor.
        """
        vf = read_any(path, kind or DEFAULT_KIND)
        if kind is None:
            kind = DEFAULT_KIND if DEFAULT_KIND in vf.tensors or len(vf.tensors) != 1 else next(iter(vf.tensors))
        if kind not in vf.tensors:
            raise VectorError(f"{path} has no tensor {kind!r}; it has {sorted(vf.tensors)}: pass kind=")
        return cls(vf.tensors[kind], {"source": str(path), **vf.metadata}, kind)

    @classmethod
    def from_logs(cls, logs: Sequence[str] = (), *, kind: str = DEFAULT_KIND, **options: Any) -> PersonaVector:
        """Extract from persona_collect logs (`pv extract`): the options of `extract_from_logs`, which also
        writes the vector file and its report."""
        from pv_harness.vectors.extraction import extract_from_logs

        result = extract_from_logs(logs, **options)
        return cls(result.vectors.tensors[kind], {"source": str(result.path), **result.vectors.metadata}, kind)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a safetensors file holding this one kind and the metadata (atomically)."""
        return save_vectors(VectorFile({self.kind: self.rows}, self.metadata), Path(path))

    # ---- shape and directions ------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        """L, the decoder blocks of the model it was made for (rows run 0..L)."""
        return self.rows.shape[0] - 1

    @property
    def hidden(self) -> int:
        return self.rows.shape[1]

    @property
    def name(self) -> str:
        """How messages and derived vectors name it: an expression, the trait, or the file."""
        meta = self.metadata
        return str(meta.get("expression") or meta.get("trait") or Path(meta.get("source", "vector")).stem)

    def __getitem__(self, layer: int) -> torch.Tensor:
        """The raw row for hidden-states `layer`."""
        try:
            return self.rows[check_layer(layer, self.num_layers)]
        except ValueError as ex:
            raise VectorError(f"vector {self.name!r}: {ex}") from ex

    def unit(self, layer: int) -> torch.Tensor:
        """The row for `layer`, scaled to length 1: the direction monitoring projects on."""
        row = self[layer]
        norm = float(row.norm())
        if norm == 0.0:
            raise VectorError(f"vector {self.name!r} is all zeros at layer {layer}: it has no direction")
        return row / norm

    def project(self, hidden: torch.Tensor | Sequence[torch.Tensor], layer: int) -> torch.Tensor:
        """Projections of activations `[..., hidden]` on `unit(layer)`, one per position, as float32.

        `hidden` may also be a model output's `hidden_states` (one tensor per layer): layer `layer` is used.
        """
        states = hidden if isinstance(hidden, torch.Tensor) else hidden[layer]
        if states.shape[-1] != self.hidden:
            raise VectorError(f"vector {self.name!r} has size {self.hidden}, the activations {states.shape[-1]}")
        return states.float() @ self.unit(layer).to(states.device)

    def row_for(self, layer: int, *, num_layers: int, hidden: int, direction: bool = False) -> torch.Tensor:
        """The row for `layer`, checked as every vector reader checks (`check_vector`) to fit a model with
        `num_layers` blocks and this `hidden` size; `direction=True` refuses a zero row (for projections)."""
        self[layer]  # raises for a layer that is not an integer in 0..L
        return check_vector(self.rows, hidden, num_layers, f"vector {self.name!r}", layer=layer, direction=direction)

    # ---- arithmetic ----------------------------------------------------------------------------------------

    def _derived(self, rows: torch.Tensor, expression: str, other: PersonaVector | None = None) -> PersonaVector:
        """A result keeps the identity metadata its operands agree on, and says how it was made."""
        meta = {k: self.metadata[k] for k in IDENTITY_KEYS if k in self.metadata
                and (other is None or other.metadata.get(k) == self.metadata[k])}
        kind = self.kind if other is None or other.kind == self.kind else "derived"
        return PersonaVector(rows, {**meta, "expression": expression}, kind)

    def _term(self) -> str:
        return f"({self.name})" if " " in self.name else self.name

    def _check_same_shape(self, other: PersonaVector, op: str) -> None:
        if other.rows.shape != self.rows.shape:
            raise VectorError(f"cannot {op} {self.name!r} {list(self.rows.shape)} and {other.name!r} "
                              f"{list(other.rows.shape)}: vectors must come from models of the same depth and width")

    def __add__(self, other: object) -> PersonaVector:
        if not isinstance(other, PersonaVector):
            return NotImplemented
        self._check_same_shape(other, "add")
        return self._derived(self.rows + other.rows, f"{self._term()} + {other._term()}", other)

    def __radd__(self, other: object) -> PersonaVector:
        """`0 + v` is `v`, so `sum(vectors)` works."""
        if isinstance(other, int | float) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: object) -> PersonaVector:
        if not isinstance(other, PersonaVector):
            return NotImplemented
        self._check_same_shape(other, "subtract")
        return self._derived(self.rows - other.rows, f"{self._term()} - {other._term()}", other)

    def __mul__(self, scale: object) -> PersonaVector:
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            return NotImplemented
        return self._derived(self.rows * float(scale), f"{scale:g} * {self._term()}")

    __rmul__ = __mul__

    def __truediv__(self, scale: object) -> PersonaVector:
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            return NotImplemented
        return self._derived(self.rows / float(scale), f"{self._term()} / {scale:g}")

    def __neg__(self) -> PersonaVector:
        return self._derived(-self.rows, f"-{self._term()}")

    def __repr__(self) -> str:
        model = self.metadata.get("model")
        return (f"PersonaVector({self.name!r}, kind={self.kind!r}, layers=0..{self.num_layers}, hidden={self.hidden}"
                + (f", model={model!r})" if model else ")"))

    # ---- steering ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def steer(self, model: Any, layer: int, coef: float, positions: Positions = "all",
              op: Op = "add") -> Iterator[None]:
        """Steer every forward call of a transformers causal LM (or a `load_model` model) inside the block.

        Adds `coef * self[layer]` at hidden-states `layer` (`op="ablate"` projects the direction out).
        `positions`: `all` (default: every call steers every real token, as for fine-tuning or scoring text),
        or, while generating with a KV cache, `prompt` (the prompt pass) or `response` (the prompt's last
        token and every generated token), as the `pv/` provider does. A coefficient of 0 changes nothing.
        """
        module = model if isinstance(model, torch.nn.Module) else getattr(model, "model", None)
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"steer() needs a transformers model (or load_model's), got {type(model).__name__}")
        if positions not in POSITIONS:
            raise VectorError(f"positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
        if op not in OPS:
            raise VectorError(f"op must be one of {', '.join(OPS)}, got {op!r}")
        layers = find_layers(module)
        config: Any = module.config
        hidden = config.get_text_config().hidden_size
        spec = SteerSpec(layer=layer, vector=self.row_for(layer, num_layers=layers.num_layers, hidden=hidden),
                         coef=float(coef), positions=positions, op=op)
        param = next(module.parameters())
        interventions = Interventions(layers, [[spec]], device=param.device, dtype=param.dtype)
        # the module that runs the blocks sees every forward call, however the model is called
        runner = module.get_submodule(layers.path.rsplit(".", 1)[0]) if "." in layers.path else module
        handle = runner.register_forward_pre_hook(_StepMasks(interventions), with_kwargs=True)
        try:
            with interventions.hooks():
                yield
        finally:
            handle.remove()


class _StepMasks:
    """Before each forward call, tell the hooks which positions are prompt and which are response.

    A call without a filled KV cache is a prompt pass (its last token starts the response); a call that
    continues a cache feeds generated tokens. Padding (attention mask 0) is in neither.
    """

    def __init__(self, interventions: Interventions) -> None:
        self.interventions = interventions

    def __call__(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs["inputs_embeds"]
        batch, length = tokens.shape[0], tokens.shape[1]
        mask = kwargs.get("attention_mask")
        real = (torch.ones(batch, length, dtype=torch.bool) if mask is None or mask.ndim != 2
                else mask[:, -length:].bool().cpu())
        past = kwargs.get("cache", kwargs.get("past_key_values"))  # transformers 5 renamed it `cache`
        cached = past.get_seq_length() if past is not None and hasattr(past, "get_seq_length") else 0
        if cached == 0:
            prompt, response = real, torch.zeros_like(real)
            response[:, -1] = real[:, -1]
        else:
            prompt, response = torch.zeros_like(real), real
        self.interventions.set_step([0] * batch, prompt=prompt, response=response)
