"""Persona-vector files, read and written: safetensors files of `[L+1, H]` tensors, the paper's `.pt` files,
and inline floats.

A vector file made by extraction holds three tensors, `response_avg_diff` (the one steering uses),
`prompt_avg_diff` and `prompt_last_diff`, each with one row per hidden-states layer (row 0 = embeddings).
safetensors metadata is a flat str -> str map; we store one JSON document under `pv_harness` so nested
details (counts, diagnostics, source logs) survive, plus the project version. Extraction also stores a
`baseline` (see `Baseline`): where the neg and pos answers sit on the vector, the reference a monitor's colours use.

The paper's released files are `.pt` files holding one such tensor; they are read with
`torch.load(weights_only=True)`, which never unpickles arbitrary objects, and `export_pt` writes them.

`check_vector` is the one check every reader of a vector makes against a model (floating point, finite,
hidden size and depth, non-zero where a direction is needed), so a problem reads the same everywhere.

`torch` and `safetensors` are imported inside the functions: the `pv/` provider imports this module
when inspect starts, and must stay cheap to import.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pv_harness import __version__
from pv_harness.atomic import atomic_write
from pv_harness.errors import PvError

if TYPE_CHECKING:
    import torch

VECTOR_KINDS = ("response_avg_diff", "prompt_avg_diff", "prompt_last_diff")
DEFAULT_KIND = "response_avg_diff"
META_KEY = "pv_harness"
PT_SUFFIXES = (".pt", ".pth")


class VectorError(ValueError, PvError):
    """A vector could not be loaded, or does not fit the model."""


@dataclass
class VectorFile:
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]


BASELINE_KEY = "baseline"


@dataclass(frozen=True)
class Baseline:
    """The mean projection of the kept neg and pos answers (each answer's response mean, onto the unit vector).

    A monitored token reads against these: near `neg` is how the answers without the trait sit, near `pos` how
    those with it sit. Stored in the metadata as `{"kind", "neg": [one per layer], "pos": [...]}`.
    """

    neg: float
    pos: float


def read_baseline(metadata: dict[str, Any], kind: str, layer: int) -> Baseline | None:
    """The stored baseline of vector `kind` at `layer`, or None (an older file, another kind, a `.pt` file)."""
    stored = metadata.get(BASELINE_KEY)
    if not isinstance(stored, dict) or stored.get("kind") != kind:
        return None
    neg, pos = stored.get("neg"), stored.get("pos")
    if not (isinstance(neg, list) and isinstance(pos, list) and 0 <= layer < min(len(neg), len(pos))):
        return None
    return Baseline(neg=float(neg[layer]), pos=float(pos[layer]))


# --- reading -----------------------------------------------------------------------------------------------


def _rows(tensor: torch.Tensor, where: str) -> torch.Tensor:
    """`tensor` as float32, checked to be `[layers+1, hidden]` or `[hidden]` floating-point values."""
    import torch

    if tensor.ndim not in (1, 2):
        raise VectorError(f"{where} has shape {tuple(tensor.shape)}; expected [layers+1, hidden] or [hidden]")
    if not tensor.is_floating_point():
        raise VectorError(f"{where} holds {str(tensor.dtype).removeprefix('torch.')} values; a vector must be "
                          "floating point: was it saved from the right tensor?")
    return tensor.detach().to(torch.float32)


def check_vector(rows: torch.Tensor, hidden: int, num_layers: int | None, where: str, *, layer: int | None = None,
                 direction: bool = False) -> torch.Tensor:
    """The one check every reader of a vector makes, so each problem reads the same wherever it is found.

    `rows` is `[num_layers+1, hidden]` (one row per hidden-states layer) or `[hidden]` (the same vector at
    every layer); `num_layers=None` skips the depth check. Returns the float32 row for `layer`, or every row
    when `layer` is None. `direction=True` is for projections (monitoring, shift, screening), which need a
    non-zero vector; steering accepts a zero vector (it adds exactly nothing).
    """
    import torch

    rows = _rows(rows, where)
    if rows.ndim == 2:
        if num_layers is not None and rows.shape[0] != num_layers + 1:
            raise VectorError(f"{where} has {rows.shape[0]} rows; this model needs {num_layers + 1} "
                              f"(one per hidden-states layer 0..{num_layers}): made for another model?")
        if layer is not None and not 0 <= layer < rows.shape[0]:
            raise VectorError(f"{where} has rows for layers 0..{rows.shape[0] - 1}; layer {layer} is out of range")
    if rows.shape[-1] != hidden:
        raise VectorError(f"{where} has size {rows.shape[-1]}, but this model's hidden size is {hidden}")
    finite = torch.isfinite(rows).all(dim=-1)
    if not bool(finite.all()):
        bad = "" if rows.ndim == 1 else f" (layers {', '.join(map(str, (~finite).nonzero().flatten().tolist()))})"
        raise VectorError(f"{where} contains NaN or infinite values{bad}: re-extract it")
    vector = rows if layer is None or rows.ndim == 1 else rows[layer]
    if direction and not bool(vector.any()):
        at = f" at layer {layer}" if layer is not None and rows.ndim == 2 else ""
        raise VectorError(f"{where} is all zeros{at}: there is no direction to project onto")
    return vector


def _pt_problem(file: Path, ex: Exception) -> str:
    """Why a `.pt` file did not load, in our words: torch's own message advises unpickling, which we never do."""
    text = str(ex)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"{file} holds Python objects other than tensors ({found.group(1)}), and pv-harness never unpickles "
                "a file; save the tensor alone with torch.save(tensor, path), or a dict of tensors")
    detail = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    reason = detail.group(1).strip() if detail else (text.strip().splitlines() or [""])[0]
    return f"{file} is not a tensor file written by torch.save ({type(ex).__name__}: {reason})"


def _read(path: str | os.PathLike[str], kind: str | None = None) -> VectorFile:
    """The one reader behind every loader.

    safetensors: every tensor (`kind=None`) or only `kind`, with our metadata. `.pt`: the one tensor the
    file holds (or `kind` from a dict of them), checked and float32, named `kind` (default `DEFAULT_KIND`).
    """
    import torch

    file = Path(path).expanduser()
    if not file.is_file():
        raise VectorError(f"vector file not found: {file}")
    if file.suffix in PT_SUFFIXES:
        kind = kind or DEFAULT_KIND
        try:
            loaded: Any = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as ex:
            raise VectorError(_pt_problem(file, ex)) from ex
        if isinstance(loaded, dict):
            if kind not in loaded:
                raise VectorError(f"{file} has no tensor {kind!r}; it has {sorted(loaded)}")
            loaded = loaded[kind]
        if not isinstance(loaded, torch.Tensor):
            raise VectorError(f"{file} holds a {type(loaded).__name__}, not a tensor")
        return VectorFile({kind: _rows(loaded, f"{file} ({kind})")}, {"source": "paper .pt file", "kind": kind})

    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            names = list(f.keys())
            if kind is not None and kind not in names:
                raise VectorError(f"{file} has no tensor {kind!r}; it has {sorted(names)}")
            tensors = {k: f.get_tensor(k) for k in (names if kind is None else [kind])}
            raw = (f.metadata() or {}).get(META_KEY)
    except SafetensorError as ex:
        raise VectorError(f"{file} is not a safetensors file: {ex}") from ex
    return VectorFile(tensors, json.loads(raw) if raw else {})


def load_vector_rows(path: str | os.PathLike[str], kind: str = DEFAULT_KIND) -> torch.Tensor:
    """The `[L+1, H]` float32 tensor `kind` from a vector file (a `.pt` file holds one tensor, `kind` unused)."""
    file = Path(path).expanduser()
    return _rows(_read(file, kind).tensors[kind], f"{file} ({kind})")


def read_vectors(path: str | os.PathLike[str]) -> VectorFile:
    """Every tensor and the metadata of a file we wrote (or any safetensors file; a `.pt` reads as `read_any`)."""
    return _read(path)


def read_any(path: str | os.PathLike[str], kind: str = DEFAULT_KIND) -> VectorFile:
    """A file we wrote (all kinds, with metadata) or the paper's `.pt` (one tensor, named `kind`)."""
    return _read(path, kind if Path(path).suffix in PT_SUFFIXES else None)


class VectorCache:
    """Loaded vector files, keyed by path, modification time and kind, so a file is read once per change."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, int, str], torch.Tensor] = {}

    def rows(self, path: str | os.PathLike[str], kind: str = DEFAULT_KIND) -> torch.Tensor:
        file = Path(path).expanduser().resolve()
        stamp = file.stat().st_mtime_ns if file.exists() else -1
        key = (str(file), stamp, kind)
        if key not in self._rows:
            self._rows[key] = load_vector_rows(file, kind)
        return self._rows[key]


def vector_for(
    vector: str | os.PathLike[str] | Sequence[float],
    layer: int,
    hidden: int,
    *,
    kind: str = DEFAULT_KIND,
    num_layers: int | None = None,
    cache: VectorCache | None = None,
    direction: bool = False,
) -> torch.Tensor:
    """The `[hidden]` float32 vector for `layer`, from a file (row `layer`) or a list of floats (used as is).

    `num_layers` (L), when given, checks that a file's `[L+1, H]` tensor was made for a model this deep;
    `direction` refuses a zero vector (see `check_vector`).
    """
    import torch

    if isinstance(vector, str | os.PathLike):
        rows = cache.rows(vector, kind) if cache is not None else load_vector_rows(vector, kind)
        where = f"{vector} ({kind})"
    elif isinstance(vector, Sequence) and all(isinstance(x, int | float) and not isinstance(x, bool)
                                              for x in vector):
        where = "the inline vector"
        rows = torch.tensor([float(x) for x in vector], dtype=torch.float32)
    else:
        raise VectorError(f"a vector is a file path or a list of numbers, got {type(vector).__name__}")
    return check_vector(rows, hidden, num_layers, where, layer=layer, direction=direction)


# --- writing -----------------------------------------------------------------------------------------------


def save_vectors(vectors: VectorFile, path: str | Path) -> Path:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    import torch
    from safetensors.torch import save_file

    path = Path(path)
    meta = {**vectors.metadata, "pv_harness_version": __version__}
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in vectors.tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)}))
    return path


def export_pt(vectors: VectorFile, directory: str | Path, trait: str) -> list[Path]:
    """The paper's three files, `<trait>_<kind>.pt`, each one plain tensor (loads with weights_only=True)."""
    import torch

    paths = []
    for kind, tensor in vectors.tensors.items():
        path = Path(directory) / f"{trait}_{kind}.pt"

        def save(tmp: str, t: torch.Tensor = tensor) -> None:
            torch.save(t.detach().cpu().clone(), tmp)

        atomic_write(path, save)
        paths.append(path)
    return paths
