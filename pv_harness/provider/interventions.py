"""Per-row steering and monitoring hooks on the residual stream of a transformers model.

One batch can mix requests that steer differently (or not at all) and monitor different vectors: every
steering entry is a column with a coefficient for its own row only, so rows never see each other's
vectors, and a row with no entry (or coefficient 0, or a zero vector) gets exactly `h + 0`.

Layers follow the hidden-states convention of `pv_harness.provider.layers`: steering layer 0 edits the input of
the first block, layer l >= 1 edits the output of block l-1 (for l = L that is *before* the final norm,
as in the paper's steering code). Monitoring layer l reads exactly `hidden_states[l]` (for l = L the final
norm's output), after any steering at that layer, so it sees the steered stream.

Positions, per forward call, come from three masks the caller sets with `set_step`:
`prompt` (prompt tokens), `response` (the last prompt token and every generated token) and their union
`all`. Within one layer, `ablate` entries act first, together: h - sum_k coef_k (h.u_k) u_k, with u_k the
unit vector and coef 1 removing the direction completely; then `add` entries: h + sum_k coef_k v_k.
Usable outside inspect: build `Interventions`, call `set_step` before each forward, wrap calls in `hooks()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from pv_harness.errors import PvError
from pv_harness.provider.layers import ModelLayers, check_layer
from pv_harness.vectors.files import DEFAULT_KIND, VECTOR_KINDS, VectorCache, VectorError, vector_for

Positions = Literal["all", "prompt", "response"]
Op = Literal["add", "ablate"]
POSITIONS: tuple[Positions, ...] = ("all", "prompt", "response")
OPS: tuple[Op, ...] = ("add", "ablate")
DEFAULT_POSITIONS: Positions = "response"
STEER_KEYS = {"vector", "layer", "coef", "positions", "op", "kind"}
MONITOR_KEYS = {"vector", "layer", "kind"}


class SteeringError(ValueError, PvError):
    """A steering or monitoring request that cannot be applied to this model."""


@dataclass(frozen=True)
class SteerSpec:
    """One resolved steering entry: `op` with `vector` at hidden-states `layer` on `positions`."""

    layer: int
    vector: torch.Tensor  # [hidden], float32
    coef: float
    positions: Positions = DEFAULT_POSITIONS
    op: Op = "add"


@dataclass(frozen=True)
class MonitorSpec:
    """One resolved monitor: project hidden-states `layer` onto the unit `vector`; `label` names its source."""

    layer: int
    vector: torch.Tensor  # [hidden], float32
    label: str = "inline"
    kind: str = DEFAULT_KIND


def _source(entry: Mapping[str, Any], what: str) -> tuple[Any, str, str]:
    if "vector" not in entry:
        raise SteeringError(f"{what} entry needs a 'vector' (a vector file path or a list of floats): {entry!r}")
    vector = entry["vector"]
    kind = entry.get("kind", DEFAULT_KIND)
    if kind not in VECTOR_KINDS:
        raise SteeringError(f"{what} 'kind' must be one of {', '.join(VECTOR_KINDS)}, got {kind!r}")
    label = str(vector) if isinstance(vector, str) else "inline"
    return vector, label, kind


def _layer(entry: Mapping[str, Any], what: str, num_layers: int) -> int:
    if "layer" not in entry:
        raise SteeringError(f"{what} entry needs a 'layer' (0..{num_layers}): {entry!r}")
    try:
        return check_layer(entry["layer"], num_layers)
    except ValueError as ex:
        raise SteeringError(f"{what}: {ex}") from ex


def _resolve(vector: Any, layer: int, kind: str, what: str, *, hidden: int, num_layers: int,
             cache: VectorCache | None, direction: bool = False) -> torch.Tensor:
    try:
        return vector_for(vector, layer, hidden, kind=kind, num_layers=num_layers, cache=cache, direction=direction)
    except VectorError as ex:
        raise SteeringError(f"{what}: {ex}") from ex


def _entries(entries: Any, what: str) -> list[Mapping[str, Any]]:
    if entries is None:
        return []
    if isinstance(entries, Mapping):
        entries = [entries]
    if not isinstance(entries, Sequence) or isinstance(entries, str):
        raise SteeringError(f"{what} must be a list of entries, got {type(entries).__name__}")
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise SteeringError(f"each {what} entry must be a dict, got {entry!r}")
    return list(entries)


def _known_keys(entry: Mapping[str, Any], what: str, allowed: set[str]) -> None:
    unknown = set(entry) - allowed
    if unknown:
        raise SteeringError(f"unknown {what} key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")


def parse_steer(entries: Any, *, hidden: int, num_layers: int, cache: VectorCache | None = None) -> list[SteerSpec]:
    """Validate `extra_body["pv"]["steer"]` entries and load their vectors."""
    specs = []
    for entry in _entries(entries, "steer"):
        _known_keys(entry, "steer", STEER_KEYS)
        vector, _, kind = _source(entry, "steer")
        layer = _layer(entry, "steer", num_layers)
        op = entry.get("op", "add")
        if op not in OPS:
            raise SteeringError(f"steer 'op' must be one of {', '.join(OPS)}, got {op!r}")
        positions = entry.get("positions", DEFAULT_POSITIONS)
        if positions not in POSITIONS:
            raise SteeringError(f"steer 'positions' must be one of {', '.join(POSITIONS)}, got {positions!r}")
        if "coef" not in entry and op == "add":
            raise SteeringError(f"steer entry with op 'add' needs a 'coef': {entry!r}")
        coef = entry.get("coef", 1.0)
        if isinstance(coef, bool) or not isinstance(coef, int | float):
            raise SteeringError(f"steer 'coef' must be a number, got {coef!r}")
        v = _resolve(vector, layer, kind, "steer", hidden=hidden, num_layers=num_layers, cache=cache)
        specs.append(SteerSpec(layer=layer, vector=v, coef=float(coef), positions=positions, op=op))
    return specs


def parse_monitor(entries: Any, *, hidden: int, num_layers: int,
                  cache: VectorCache | None = None) -> list[MonitorSpec]:
    """Validate `extra_body["pv"]["monitor"]` entries and load their vectors."""
    specs = []
    for entry in _entries(entries, "monitor"):
        _known_keys(entry, "monitor", MONITOR_KEYS)
        vector, label, kind = _source(entry, "monitor")
        layer = _layer(entry, "monitor", num_layers)
        v = _resolve(vector, layer, kind, "monitor", hidden=hidden, num_layers=num_layers, cache=cache,
                     direction=True)
        specs.append(MonitorSpec(layer=layer, vector=v, label=label, kind=kind))
    return specs


def _unit(v: torch.Tensor) -> torch.Tensor:
    norm = v.norm()
    return v / norm if float(norm) > 0 else v.clone()  # a zero vector ablates nothing


class StopForward(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a monitor hook to end a forward pass once the deepest monitored layer is recorded."""


@dataclass
class _Columns:
    """Entries of one op at one hook point: one column per (row, entry)."""

    vectors: torch.Tensor  # [K, H] model dtype (unit vectors for ablate)
    coefs: torch.Tensor  # [rows, K], coef in the owner row's line, 0 elsewhere
    kinds: torch.Tensor  # [K] index into the stacked masks (0 all, 1 prompt, 2 response)


@dataclass
class _Point:
    """Everything hooked at one module: steering columns and monitors."""

    add: _Columns | None = None
    ablate: _Columns | None = None
    monitor_units: torch.Tensor | None = None  # [M, H] float32 unit vectors
    monitor_rows: torch.Tensor | None = None  # [M] owner row (original batch index)
    monitor_ids: list[tuple[int, int]] = field(default_factory=list)  # (row, monitor index in that row)
    records: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (values [M], valid [M])
    depth: int = 0


class Interventions:
    """Steering and monitoring for one batch of rows; each row has its own entries (possibly none)."""

    def __init__(self, layers: ModelLayers, steer: Sequence[Sequence[SteerSpec]],
                 monitor: Sequence[Sequence[MonitorSpec]] | None = None, *, device: Any = "cpu",
                 dtype: Any = None) -> None:
        self.layers = layers
        self.num_rows = len(steer)
        monitor = monitor if monitor is not None else [[] for _ in steer]
        if len(monitor) != self.num_rows:
            raise ValueError("steer and monitor need one list per row")
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self._points: dict[tuple[int, str], _Point] = {}
        self._modules: dict[tuple[int, str], Any] = {}
        self.stop_after: int | None = None  # raise StopForward after the monitor at this depth

        steer_cols: dict[tuple[int, str], dict[str, list[tuple[int, SteerSpec]]]] = {}
        for row, specs in enumerate(steer):
            for spec in specs:
                steer_cols.setdefault(self._steer_point(spec.layer), {"add": [], "ablate": []})[spec.op].append(
                    (row, spec))
        for key, by_op in steer_cols.items():
            point = self._point(key)
            point.add = self._columns(by_op["add"], unit=False)
            point.ablate = self._columns(by_op["ablate"], unit=True)

        mon: dict[tuple[int, str], list[tuple[int, int, MonitorSpec]]] = {}
        for row, monitors in enumerate(monitor):
            for i, monitor_spec in enumerate(monitors):
                mon.setdefault(self._monitor_point(monitor_spec.layer), []).append((row, i, monitor_spec))
        for key, items in mon.items():
            point = self._point(key)
            point.monitor_units = torch.stack([_unit(s.vector) for _, _, s in items]).to(self.device)
            point.monitor_rows = torch.tensor([r for r, _, _ in items], device=self.device)
            point.monitor_ids = [(r, i) for r, i, _ in items]
            point.depth = max(s.layer for _, _, s in items)
        self.monitor_depth = max((p.depth for p in self._points.values() if p.monitor_ids), default=-1)
        self._rows: torch.Tensor | None = None
        self._masks: torch.Tensor | None = None

    @property
    def empty(self) -> bool:
        return not self._points

    @property
    def monitoring(self) -> bool:
        return self.monitor_depth >= 0

    def _steer_point(self, layer: int) -> tuple[int, str]:
        return (0, "pre") if layer == 0 else (layer - 1, "post")

    def _monitor_point(self, layer: int) -> tuple[int, str]:
        if layer == 0:
            return (0, "pre")
        if layer == self.layers.num_layers and self.layers.final_norm is not None:
            return (-1, "norm")
        return (layer - 1, "post")

    def _point(self, key: tuple[int, str]) -> _Point:
        if key not in self._points:
            self._points[key] = _Point()
            block, where = key
            self._modules[key] = self.layers.final_norm if where == "norm" else self.layers.blocks[block]
        return self._points[key]

    def _columns(self, items: list[tuple[int, SteerSpec]], *, unit: bool) -> _Columns | None:
        if not items:
            return None
        vectors = torch.stack([_unit(s.vector) if unit else s.vector for _, s in items])
        coefs = torch.zeros(self.num_rows, len(items), dtype=torch.float32)
        for k, (row, spec) in enumerate(items):
            coefs[row, k] = spec.coef
        kinds = torch.tensor([POSITIONS.index(s.positions) for _, s in items])
        return _Columns(vectors=vectors.to(self.device, self.dtype), coefs=coefs.to(self.device, self.dtype),
                        kinds=kinds.to(self.device))

    def set_step(self, rows: torch.Tensor | Sequence[int], prompt: torch.Tensor, response: torch.Tensor) -> None:
        """Before a forward call: which original rows the batch holds, and the position masks `[B, T]`.

        `prompt` marks prompt tokens, `response` the last prompt token and generated tokens (padding in
        neither); `all` is their union. Monitors record the last position of the call for every row.
        """
        self._rows = torch.as_tensor(rows, device=self.device)
        prompt = prompt.to(self.device, torch.bool)
        response = response.to(self.device, torch.bool)
        self._masks = torch.stack([prompt | response, prompt, response]).to(self.dtype)  # [3, B, T]

    def _weights(self, cols: _Columns) -> torch.Tensor:
        assert self._rows is not None and self._masks is not None
        coefs = cols.coefs[self._rows]  # [B, K]
        masks = self._masks[cols.kinds]  # [K, B, T]
        return masks.permute(1, 2, 0) * coefs[:, None, :]  # [B, T, K]

    def _apply(self, point: _Point, h: torch.Tensor) -> torch.Tensor:
        if self._masks is None:
            raise RuntimeError("Interventions.set_step must be called before each forward pass")
        if point.ablate is not None:
            u = point.ablate.vectors.to(h.dtype)
            weights = self._weights(point.ablate).to(h.dtype)
            h = h - ((h @ u.T) * weights) @ u
        if point.add is not None:
            h = h + self._weights(point.add).to(h.dtype) @ point.add.vectors.to(h.dtype)
        if point.monitor_units is not None:
            assert self._rows is not None and point.monitor_rows is not None
            # where each monitor's owner row sits in the current batch (-1 when it has left the batch)
            where = torch.full((self.num_rows,), -1, dtype=torch.long, device=self.device)
            where[self._rows] = torch.arange(len(self._rows), device=self.device)
            pos = where[point.monitor_rows]
            valid = pos >= 0
            last = h[:, -1, :].float()[pos.clamp(min=0)]  # [M, H]
            point.records.append(((last * point.monitor_units).sum(-1), valid))
            if self.stop_after is not None and point.depth >= self.stop_after:
                raise StopForward
        return h

    def _hook(self, point: _Point, where: str) -> Any:
        if where == "pre":
            def pre(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if args:
                    return (self._apply(point, args[0]), *args[1:]), kwargs
                kwargs = dict(kwargs)
                kwargs["hidden_states"] = self._apply(point, kwargs["hidden_states"])
                return args, kwargs
            return pre

        def post(module: Any, args: tuple[Any, ...], output: Any) -> Any:
            if isinstance(output, tuple):
                return (self._apply(point, output[0]), *output[1:])
            return self._apply(point, output)
        return post

    @contextlib.contextmanager
    def hooks(self) -> Iterator[Interventions]:
        """Install the hooks for the enclosed forward calls (none at all when there is nothing to do)."""
        handles = []
        try:
            for key, point in self._points.items():
                module = self._modules[key]
                if key[1] == "pre":
                    handles.append(module.register_forward_pre_hook(self._hook(point, "pre"), with_kwargs=True))
                else:
                    handles.append(module.register_forward_hook(self._hook(point, "post")))
            yield self
        finally:
            for handle in handles:
                handle.remove()

    def monitor_values(self) -> list[list[list[float]]]:
        """Per row, per monitor entry: the projection recorded at each forward call (in call order)."""
        out: list[list[list[float]]] = [[] for _ in range(self.num_rows)]
        sizes: dict[int, int] = {}
        for point in self._points.values():
            for r, i in point.monitor_ids:
                sizes[r] = max(sizes.get(r, 0), i + 1)
        for r, n in sizes.items():
            out[r] = [[] for _ in range(n)]
        for point in self._points.values():
            if not point.records:
                continue
            values = torch.stack([v for v, _ in point.records]).cpu().tolist()  # [calls, M]
            valid = torch.stack([ok for _, ok in point.records]).cpu().tolist()
            for m, (r, i) in enumerate(point.monitor_ids):
                out[r][i] = [float(vals[m]) for vals, oks in zip(values, valid, strict=True) if oks[m]]
        return out


@contextlib.contextmanager
def steer_all(model: Any, specs: Sequence[SteerSpec], layers: ModelLayers | None = None) -> Iterator[None]:
    """Apply `specs` to every row and every position of every forward call inside (positions are ignored).

    For plain transformers code outside the provider, such as steering during fine-tuning.
    """
    from pv_harness.provider.layers import find_layers

    layers = layers or find_layers(model)
    all_positions = [SteerSpec(s.layer, s.vector, s.coef, "all", s.op) for s in specs]
    param = next(model.parameters())
    with _AllRows(layers, [all_positions], device=param.device, dtype=param.dtype).hooks():
        yield


class _AllRows(Interventions):
    """Interventions whose single row of entries applies to the whole batch at every position."""

    def _weights(self, cols: _Columns) -> Any:
        return cols.coefs[0]  # [K]: broadcast over batch and positions

    def _apply(self, point: _Point, h: Any) -> Any:
        if point.ablate is not None:
            u = point.ablate.vectors.to(h.dtype)
            h = h - ((h @ u.T) * self._weights(point.ablate).to(h.dtype)) @ u
        if point.add is not None:
            h = h + self._weights(point.add).to(h.dtype) @ point.add.vectors.to(h.dtype)
        return h
