"""`load_model`: the `pv/` provider's engine for plain, synchronous Python.

In inspect, steering and monitoring travel in `extra_body` and generation is async; a researcher at a
prompt wants `model.generate("...", steer=[(vector, layer, coef)], monitor=[(vector, layer)])` and the
text with its projections back. This calls the same `Engine` the provider batches into, so a request
here computes what the same request through `pv/` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pv_harness.provider.engine import Engine, GenRequest
from pv_harness.provider.interventions import DEFAULT_POSITIONS, POSITIONS, MonitorSpec, SteeringError, SteerSpec
from pv_harness.vectors.persona_vector import PersonaVector

VectorLike = PersonaVector | str | os.PathLike[str]
# (vector, layer, coef) or (vector, layer, coef, positions); positions default to the provider's `response`
SteerEntry = tuple[VectorLike, int, float] | tuple[VectorLike, int, float, str]
MonitorEntry = tuple[VectorLike, int]


@dataclass
class Generation:
    """One answer, with per monitor entry (in the order given) its projections, one per token in `tokens`."""

    text: str
    tokens: list[str]
    token_ids: list[int]  # the answer's tokens, an end-of-turn token excluded
    stop_reason: str
    projections: list[list[float]]
    prompt_last: list[float | None]  # per monitor entry: the last prompt token's projection (before any answer)

    def __str__(self) -> str:
        return self.text


class LocalModel:
    """A loaded transformers model (`.model`, `.tokenizer`) with synchronous steered, monitored generation."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self.model = engine.model
        self.tokenizer = engine.tokenizer

    @property
    def num_layers(self) -> int:
        return self.engine.num_layers

    def __repr__(self) -> str:
        return f"LocalModel({self.name!r}, layers=0..{self.num_layers}, hidden={self.engine.hidden})"

    def _vector(self, vector: VectorLike, what: str) -> PersonaVector:
        if isinstance(vector, PersonaVector):
            return vector
        if isinstance(vector, str | os.PathLike):
            return PersonaVector.load(vector)
        raise SteeringError(f"{what}: a vector is a PersonaVector or a vector file path, got {type(vector).__name__}")

    def _row(self, vector: PersonaVector, layer: int, *, direction: bool = False) -> Any:
        return vector.row_for(layer, num_layers=self.engine.num_layers, hidden=self.engine.hidden, direction=direction)

    def _steer(self, entry: Sequence[Any]) -> SteerSpec:
        if len(entry) not in (3, 4):
            raise SteeringError(f"a steer entry is (vector, layer, coef) or (vector, layer, coef, positions), "
                                f"got {len(entry)} items")
        vector, layer, coef = entry[:3]
        positions = entry[3] if len(entry) == 4 else DEFAULT_POSITIONS
        if positions not in POSITIONS:
            raise SteeringError(f"steer positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
        if isinstance(coef, bool) or not isinstance(coef, int | float):
            raise SteeringError(f"steer coef must be a number, got {coef!r}")
        row = self._row(self._vector(vector, "steer"), layer)
        return SteerSpec(layer=layer, vector=row, coef=float(coef), positions=positions)

    def _monitor(self, entry: Sequence[Any]) -> MonitorSpec:
        if len(entry) != 2:
            raise SteeringError(f"a monitor entry is (vector, layer), got {len(entry)} items")
        vector = self._vector(entry[0], "monitor")
        row = self._row(vector, entry[1], direction=True)
        return MonitorSpec(layer=entry[1], vector=row, label=vector.name, kind=vector.kind)

    def generate(self, prompt: str | Sequence[dict[str, str]], *, system: str | None = None, max_tokens: int = 256,
                 temperature: float = 0.0, seed: int | None = None, steer: Sequence[SteerEntry] = (),
                 monitor: Sequence[MonitorEntry] = ()) -> Generation:
        """Answer a user prompt (or chat messages) through the chat template; temperature 0 is greedy.

        `steer`: `(vector, layer, coef[, positions])` entries; `monitor`: `(vector, layer)` entries.
        """
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
        if system is not None:
            messages.insert(0, {"role": "system", "content": system})
        monitors = [self._monitor(m) for m in monitor]
        request = GenRequest(prompt_ids=self.engine.encode(self.engine.chat_text(messages)), max_new_tokens=max_tokens,
                             temperature=temperature, seed=seed, steer=[self._steer(s) for s in steer],
                             monitor=monitors)
        (result,) = self.engine.generate([request])
        ids = result.token_ids
        ids = ids[:-1] if ids and ids[-1] in self.engine.stop_ids else ids  # the end-of-turn token is no text
        monitored = result.monitor or []
        return Generation(text=result.text, tokens=[self.engine.token_text(t) for t in ids], token_ids=ids,
                          stop_reason=result.stop_reason,
                          projections=[m["projections"] for m in monitored],
                          prompt_last=[m["prompt_last"] for m in monitored])


def load_model(name: str | os.PathLike[str], *, device: str | None = None, dtype: Any = None,
               **from_pretrained: Any) -> LocalModel:
    """Load `"smollm2"` (the embedded model), a local folder or a hub id, as the `pv/` provider would."""
    from pv_harness.models import local_path

    return LocalModel(Engine.load(local_path(str(name)), device=device, dtype=dtype, **from_pretrained),
                      str(Path(name)) if isinstance(name, os.PathLike) else name)
